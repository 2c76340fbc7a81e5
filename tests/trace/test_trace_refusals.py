"""Every kind of bad input is refused with a message naming file, line or row, and column."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tracekit.errors import TraceFormatError, TracekitError
from tracekit.trace import TRACE_FORMAT, normalize_jsonl, validate_trace, iter_batches, write_trace

# (name, line 2 of a JSONL trace whose line 1 is a valid syn, column, message fragment)
BAD_LINES = [
    ("invalid JSON", '{"host": "h1", "seq": 2,', None, "invalid JSON"),
    ("not an object", "[1, 2]", None, "expected a JSON object, got list"),
    ("unknown event", {"event": "frobnicate"}, "event", "unknown event 'frobnicate'"),
    ("unknown column", {"lprot": 80}, "lprot", "unknown column"),
    ("missing event", {"event": None}, "event", "missing (required in every row)"),
    ("missing host", {"host": None}, "host", "missing (required in every row)"),
    ("missing seq", {"seq": None}, "seq", "missing (required in every row)"),
    ("missing column the event requires", {"lport": None}, "lport", "missing (event 'syn' requires it)"),
    ("accept without sk", {"event": "accept"}, "sk", "missing (event 'accept' requires it)"),
    ("string for integer", {"lport": "80"}, "lport", "expected an integer, got '80'"),
    ("float for integer", {"seq": 2.5}, "seq", "expected an integer, got 2.5"),
    ("integral float for integer", '{"host": "h1", "seq": 2, "event": "close", "sk": 1.0}', "sk", "expected an integer, got 1.0"),
    ("NaN for integer", '{"host": "h1", "seq": 2, "event": "close", "sk": NaN}', "sk", "expected an integer, got NaN"),
    ("not UTF-8", b'{"host": "h\xff1"}', None, "not UTF-8"),
    ("bool for integer", {"sk": True}, "sk", "expected an integer, got True"),
    ("integer for string", {"laddr": 10}, "laddr", "expected a string, got 10"),
    ("bad hex", {"payload": "zz"}, "payload", "expected a hex string, got 'zz'"),
    ("port over 65535", {"lport": 70000}, "lport", "70000 is out of range 0..65535"),
    ("negative port", {"rport": -1}, "rport", "-1 is out of range 0..65535"),
    ("hash over 2^32-1", {"hash": 2**32}, "hash", "4294967296 is out of range 0..4294967295"),
    ("huge integer", {"hash": 2**70}, "hash", "is out of range 0..4294967295"),
    ("family 5", {"family": 5}, "family", "5 is not one of 4, 6"),
    ("proto sctp", {"proto": "sctp"}, "proto", "'sctp' is not one of tcp, udp"),
    ("cpu too large", {"cpu": 9000}, "cpu", "9000 is out of range 0..8191"),
    ("negative cpu", {"cpu": -1}, "cpu", "-1 is out of range 0..8191"),
    ("seq repeats", {"seq": 1}, "seq", "repeats the previous row's seq"),
    ("laddr not an address", {"laddr": "localhost"}, "laddr", "'localhost' is not an IPv4 or IPv6 address"),
    ("raddr octet over 255", {"raddr": "10.0.0.300"}, "raddr", "'10.0.0.300' is not an IPv4 or IPv6 address"),
    ("laddr with a port", {"laddr": "127.0.0.1:80"}, "laddr", "is not an IPv4 or IPv6 address"),
    ("empty raddr", {"raddr": ""}, "raddr", "'' is not an IPv4 or IPv6 address"),
    ("laddr in brackets", {"laddr": "[::1]"}, "laddr", "'[::1]' is not an IPv4 or IPv6 address"),
]


@pytest.mark.parametrize("line2, column, fragment", [case[1:] for case in BAD_LINES],
                         ids=[case[0] for case in BAD_LINES])
def test_bad_jsonl_line_is_refused(write_jsonl, tmp_path, syn, line2, column, fragment):
    if isinstance(line2, dict):
        row = syn(seq=2)
        row.update(line2)
        line2 = json.dumps(row)
    source = write_jsonl([syn(seq=1), line2, syn(seq=3)])
    output = tmp_path / "out.parquet"
    with pytest.raises(TraceFormatError) as caught:
        normalize_jsonl(source, output)
    error = caught.value
    assert (error.file, error.line, error.column) == (str(source), 2, column)
    assert fragment in str(error)
    assert str(error).startswith(f"{source}: line 2")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trace.jsonl"]


def test_error_in_a_later_chunk_names_its_line(write_jsonl, tmp_path, syn, monkeypatch):
    from tracekit.trace import normalize as normalize_module

    monkeypatch.setattr(normalize_module, "CHUNK_ROWS", 4)
    rows = [syn(seq=i) for i in range(1, 11)]
    rows[8]["family"] = 7
    with pytest.raises(TraceFormatError, match=r"line 9, column 'family': 7 is not one of 4, 6"):
        normalize_jsonl(write_jsonl(rows), tmp_path / "out.parquet")


def test_non_adjacent_repeat_is_refused_naming_the_row(write_jsonl, tmp_path, syn):
    source = write_jsonl([syn(seq=1), syn(seq=3), syn(seq=2), syn(seq=3)])
    with pytest.raises(TraceFormatError, match=r"row host=h1 seq=3, column 'seq': appears more than once"):
        normalize_jsonl(source, tmp_path / "out.parquet")
    assert not (tmp_path / "out.parquet").exists()


def test_parquet_given_to_normalize_is_refused(basic_parquet, tmp_path):
    with pytest.raises(TracekitError, match="already a Parquet file"):
        normalize_jsonl(basic_parquet, tmp_path / "again.parquet")


def _foreign(path, table, fmt=TRACE_FORMAT, **metadata):
    meta = {"tracekit.format": fmt, **metadata} if fmt is not None else {}
    pq.write_table(table.replace_schema_metadata(meta), path)
    return path


def _rows(**columns):
    base = {"host": ["h1", "h1"], "seq": [1, 2], "event": ["close", "close"], "sk": [1, 2]}
    base.update(columns)
    return pa.table(base)


def test_truncated_parquet_is_refused(basic_parquet, tmp_path):
    truncated = tmp_path / "truncated.parquet"
    truncated.write_bytes(basic_parquet.read_bytes()[:-100])
    with pytest.raises(TraceFormatError, match=r"truncated\.parquet: not a readable Parquet file"):
        validate_trace(truncated)
    with pytest.raises(TraceFormatError):
        list(iter_batches(truncated))


def test_non_parquet_file_is_refused(basic_jsonl):
    with pytest.raises(TraceFormatError, match=r"basic\.jsonl: not a Parquet file \(JSON Lines\? convert it"):
        validate_trace(basic_jsonl)


def test_other_format_version_is_refused(tmp_path):
    path = _foreign(tmp_path / "v2.parquet", _rows(), fmt="tracekit-trace/2")
    with pytest.raises(TraceFormatError, match=r"v2\.parquet: format is 'tracekit-trace/2'; this tracekit reads 'tracekit-trace/1'"):
        validate_trace(path)
    with pytest.raises(TraceFormatError, match="tracekit-trace/2"):
        list(iter_batches(path))


def test_parquet_without_format_metadata_is_refused(tmp_path):
    with pytest.raises(TraceFormatError, match="no tracekit.format metadata"):
        validate_trace(_foreign(tmp_path / "plain.parquet", _rows(), fmt=None))


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(TracekitError, match="no such file"):
        validate_trace(tmp_path / "absent.parquet")


@pytest.mark.parametrize("columns, expected", [
    ({"seq": [1, 1]}, r"row host=h1 seq=1, column 'seq': repeats the previous row's seq"),
    ({"lport": pa.array([80, 70000], pa.int32())}, r"row host=h1 seq=2, column 'lport': 70000 is out of range 0..65535"),
    ({"family": pa.array([4, 5], pa.int8())}, r"row host=h1 seq=2, column 'family': 5 is not one of 4, 6"),
    ({"hash": pa.array([1, 2**32 + 5], pa.int64())}, r"row host=h1 seq=2, column 'hash': 4294967301 is out of range"),
    ({"cpu": pa.array([-3, 0], pa.int32())}, r"row host=h1 seq=1, column 'cpu': -3 is out of range 0..8191"),
    ({"lport": ["80", "81"]}, r"row host=h1 seq=1, column 'lport': has type string, expected int32"),
    ({"event": ["close", "explode"]}, r"row host=h1 seq=2, column 'event': unknown event 'explode'"),
    ({"sk": [1, None]}, r"row host=h1 seq=2, column 'sk': missing \(event 'close' requires it\)"),
    ({"laddr": ["127.0.0.1", "127.0.0.1 "]}, r"row host=h1 seq=2, column 'laddr': '127.0.0.1 ' is not an IPv4 or IPv6 address"),
    ({"raddr": pa.array([None, "::g"]).dictionary_encode()}, r"row host=h1 seq=2, column 'raddr': '::g' is not an IPv4"),
])
def test_bad_parquet_rows_are_refused(tmp_path, columns, expected):
    path = _foreign(tmp_path / "bad.parquet", _rows(**columns))
    with pytest.raises(TraceFormatError, match=rf"bad\.parquet: {expected}"):
        validate_trace(path)


def test_missing_required_parquet_column_is_refused(tmp_path):
    path = _foreign(tmp_path / "bad.parquet", _rows().drop_columns(["event"]))
    with pytest.raises(TraceFormatError, match=r"bad\.parquet: column 'event': required column is missing"):
        validate_trace(path)


def test_repeat_far_apart_in_foreign_file_is_refused(tmp_path):
    path = _foreign(tmp_path / "bad.parquet", _rows(seq=[5, 1]).append_column("x", pa.array([0, 0])))
    assert validate_trace(path).extra_columns == ("x",)
    table = pa.table({"host": ["h1"] * 3, "seq": [5, 1, 5], "event": ["close"] * 3, "sk": [1] * 3})
    with pytest.raises(TraceFormatError, match=r"row host=h1 seq=5, column 'seq': appears more than once"):
        validate_trace(_foreign(tmp_path / "bad2.parquet", table))


def test_file_claiming_order_it_lacks_is_refused(tmp_path):
    path = _foreign(tmp_path / "bad.parquet", _rows(seq=[2, 1]), **{"tracekit.sorted_by": "host,seq"})
    with pytest.raises(TraceFormatError, match=r"row host=h1 seq=1, column 'seq': rows are not sorted by \(host, seq\), though"):
        validate_trace(path)


def test_write_trace_names_the_row_of_a_bad_dict(tmp_path, syn):
    with pytest.raises(TraceFormatError, match=r"t\.parquet: row host=h1 seq=2, column 'lport': 70000 is out of range"):
        write_trace(tmp_path / "t.parquet", [syn(seq=1), syn(seq=2, lport=70000)], source="test")
    with pytest.raises(TraceFormatError, match=r"row host=h1 seq=1, column 'sk': expected an integer"):
        write_trace(tmp_path / "t.parquet", [syn(seq=1, sk="x")], source="test")


@pytest.mark.parametrize("text", ["127.0.0.1", "0.0.0.0", "::", "::1", "::ffff:10.0.0.1",
                                  "fe80::1%lo", "2001:db8::8:800:200c:417a"])
def test_addresses_of_both_families_are_accepted(tmp_path, text):
    path = _foreign(tmp_path / "ok.parquet", _rows(laddr=[text, None], raddr=[None, text]))
    assert validate_trace(path).rows == 2


def test_an_unused_dictionary_entry_is_not_a_row():
    from tracekit.trace.checks import check_batch

    words = pa.array(["::1", "nonsense"])
    used = pa.DictionaryArray.from_arrays(pa.array([0, 0], pa.int32()), words)
    check_batch(_rows(raddr=used).to_batches()[0], file="t")
    used = pa.DictionaryArray.from_arrays(pa.array([0, 1], pa.int32()), words)
    with pytest.raises(TraceFormatError, match="row host=h1 seq=2, column 'raddr': 'nonsense'"):
        check_batch(_rows(raddr=used).to_batches()[0], file="t")
