"""Normalize's bulk path (Arrow's JSON reader) gives exactly what the line-by-line path gives."""

from __future__ import annotations

import json
import time

import pyarrow.json as pj
import pyarrow.parquet as pq
import pytest

from tracekit.errors import TraceFormatError
from tracekit.trace import normalize_jsonl
from tracekit.trace.bulk_jsonl import BulkRefused, arrow_batches
from tracekit.trace.write import HOST_GROUP_ROWS


def _outcome(source, output, **options):
    """The rows and metadata normalize writes, or the message it refuses the input with."""
    try:
        path = normalize_jsonl(source, output, **options)
    except TraceFormatError as error:
        return str(error)
    return pq.read_table(path).to_pylist(), pq.read_metadata(path).metadata


def _same_both_ways(source, tmp_path, **options):
    bulk = _outcome(source, tmp_path / "bulk.parquet", **options)
    lines = _outcome(source, tmp_path / "lines.parquet", bulk=False, **options)
    assert bulk == lines
    return bulk


def _bulk_accepts(source, host=None) -> int:
    return sum(batch.num_rows for batch in arrow_batches(source, host))


def test_bulk_path_reads_the_bundled_fixture_as_the_line_reader_does(basic_jsonl, tmp_path):
    assert _bulk_accepts(basic_jsonl) > 0
    rows, metadata = _same_both_ways(basic_jsonl, tmp_path, kernel="6.18.0-test")
    assert metadata[b"tracekit.kernel"] == b"6.18.0-test"


def test_hex_blank_lines_crlf_default_host_and_interleaved_hosts(write_jsonl, tmp_path, syn):
    rows = [
        json.dumps(syn(host="b", seq=2, payload="00ff")),
        "",
        "   ",
        json.dumps({"seq": 1, "event": "datagram", "proto": "udp", "family": 4, "laddr": "10.0.0.1",
                    "lport": 53, "raddr": "10.0.0.2", "rport": 5353, "hash": 7, "payload": "DEADbeef"}) + "\r",
        json.dumps(syn(host="a", seq=5, payload="")),
        json.dumps(syn(host="b", seq=1, payload=None)),
        json.dumps({"host": "a", "seq": 3, "event": "setsockopt", "sk": 1,
                    "name": "SO_ATTACH_REUSEPORT_CBPF", "prog": "0600000000000000", "ret": 0}),
    ]
    source = write_jsonl(rows)
    assert _bulk_accepts(source, host="z") == 5
    written, _metadata = _same_both_ways(source, tmp_path, host="z")
    assert [(r["host"], r["seq"]) for r in written] == [("a", 3), ("a", 5), ("b", 1), ("b", 2), ("z", 1)]
    assert written[4]["payload"] == bytes.fromhex("deadbeef") and written[1]["payload"] == b""


@pytest.mark.parametrize("text", [
    b'{"host":"h1","seq":1,"event":"close","sk":1} {"host":"h1","seq":2,"event":"close","sk":1}\n',
    b'{"host":"h1","seq":1,"event":"close",\n"sk":1}\n{"host":"h1","seq":2,"event":"close","sk":1}\n',
    b'{"host":"h1","seq":1,"event":"close","sk":1} {"host":"h1",\n"seq":2,"event":"close","sk":1}\n',
    b'\xef\xbb\xbf{"host":"h1","seq":1,"event":"close","sk":1}\n',
    b'{"host":"h\xff","seq":1,"event":"close","sk":1}\n',
    b'{"host":"h1","seq":1,"event":"close","sk":1,"sk":2}\n',
    b'{"host":"h1","seq":1,"event":"syn","proto":"tcp","family":4,"laddr":"a","lport":1,'
    b'"raddr":"b","rport":2,"hash":3,"cpu":0,"payload":"de ad"}\n',
    b'{"host":"h1","seq":1,"event":"close","sk":1}\n\x0b\n',
    b'\n\n',
    b'',
], ids=["two objects on a line", "object over two lines", "split object, as many objects as lines",
        "byte-order mark", "invalid UTF-8", "key given twice", "hex with a space", "vertical tab line",
        "only blank lines", "empty file"])
def test_what_arrow_reads_differently_goes_to_the_line_reader(tmp_path, text):
    source = tmp_path / "trace.jsonl"
    source.write_bytes(text)
    with pytest.raises(BulkRefused):
        _bulk_accepts(source)
    _same_both_ways(source, tmp_path)


def test_a_bad_row_found_in_bulk_is_named_by_its_line(write_jsonl, tmp_path, syn):
    rows = [syn(host=f"h{i % 7}", seq=i) for i in range(1, 3000)]
    rows[2500]["lport"] = 70000
    source = write_jsonl(["", *rows])
    message = _same_both_ways(source, tmp_path)
    assert message == f"{source}: line 2502, column 'lport': 70000 is out of range 0..65535"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trace.jsonl"]


def _interleaved(write_jsonl, syn, hosts: int, rows_per_host: int):
    return write_jsonl([json.dumps(syn(host=f"host-{h:05d}", seq=s)) for s in range(rows_per_host, 0, -1)
                        for h in range(hosts)])


@pytest.mark.slow
def test_normalize_is_linear_in_hosts(write_jsonl, tmp_path, syn):
    """20,000 hosts, interleaved and each in reverse seq order. Regrouping host by host (the old
    way) read the spool once per host; one sort stays within a few times Arrow's own parse."""
    source = _interleaved(write_jsonl, syn, hosts=20_000, rows_per_host=5)
    start = time.perf_counter()
    pj.read_json(source)
    parse = time.perf_counter() - start
    start = time.perf_counter()
    normalize_jsonl(source, tmp_path / "out.parquet")
    assert time.perf_counter() - start < 10 * parse + 2


def test_row_groups_hold_whole_hosts_whatever_the_batching(tmp_path, syn):
    from tracekit.trace import write_trace

    rows = [syn(host=f"h{h:03d}", seq=s) for h in range(40) for s in range(1, 3001 + h)]
    first = write_trace(tmp_path / "a.parquet", rows, source="test")
    second = write_trace(tmp_path / "b.parquet", (r for r in reversed(rows)), source="test")
    layout = []
    for path in (first, second):
        metadata = pq.read_metadata(path)
        groups = [metadata.row_group(i) for i in range(metadata.num_row_groups)]
        layout.append([(g.num_rows, g.column(0).statistics.min, g.column(0).statistics.max) for g in groups])
    assert layout[0] == layout[1]
    assert len(layout[0]) > 1 and all(rows >= HOST_GROUP_ROWS for rows, *_ in layout[0][:-1])
    for (_, _, last), (_, first_host, _) in zip(layout[0], layout[0][1:]):
        assert last < first_host  # no host spans two row groups
