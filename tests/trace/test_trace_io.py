"""write_trace and iter_batches: inputs of every kind, streaming, directories, foreign files."""

from __future__ import annotations

import pickle

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tracekit.errors import TraceFormatError
from tracekit.trace import (
    SCHEMA, TRACE_FORMAT, iter_batches, read_metadata, read_trace, validate_trace, write_trace,
)
from tracekit.trace import write as write_module


def _keys(path):
    return [(r["host"], r["seq"]) for b in iter_batches(path, columns=["host", "seq"]) for r in b.to_pylist()]


def test_dict_rows_with_bytes(tmp_path, syn):
    rows = [syn(seq=1, payload=b"\x00\xff"), {"host": "h1", "seq": 2, "event": "setsockopt", "sk": 3,
                                             "name": "SO_ATTACH_REUSEPORT_CBPF", "prog": b"\x06" * 8}]
    out = write_trace(tmp_path / "t.parquet", rows, {"tracekit.kernel": "6.1"}, source="test")
    got = [b.to_pylist() for b in iter_batches(out, columns=["payload", "prog"])][0]
    assert got == [{"payload": b"\x00\xff", "prog": None}, {"payload": None, "prog": b"\x06" * 8}]
    assert read_metadata(out)["tracekit.source"] == "test"
    assert read_metadata(out)["tracekit.kernel"] == "6.1"


def _batch(host: str, seqs, **extra) -> pa.RecordBatch:
    n = len(seqs)
    columns = {
        "host": pa.array([host] * n), "seq": pa.array(seqs, pa.int64()),
        "event": pa.array(["reuseport_select_sock"] * n), "sk": pa.array(np.ones(n, np.int64)),
    }
    columns.update(extra)
    return pa.RecordBatch.from_pydict(columns)


def test_record_batches_with_foreign_types_are_cast(tmp_path):
    batch = _batch("h", [1, 2], hash=pa.array([1, 2**32 - 1], pa.int64()), cpu=pa.array([0, 3], pa.int64()))
    out = write_trace(tmp_path / "t.parquet", [batch], source="simulate")
    [got] = list(iter_batches(out))
    assert got.schema.equals(SCHEMA)
    assert got.column("hash").to_pylist() == [1, 2**32 - 1]


def test_table_in_any_order_is_sorted(tmp_path):
    table = pa.Table.from_batches([_batch("b", [3, 1, 2]), _batch("a", [9, 8])])
    out = write_trace(tmp_path / "t.parquet", table, source="test")
    assert _keys(out) == [("a", 8), ("a", 9), ("b", 1), ("b", 2), ("b", 3)]


def test_repeated_seq_in_unordered_host_is_refused(tmp_path):
    table = pa.Table.from_batches([_batch("b", [3, 1, 3])])
    with pytest.raises(TraceFormatError, match=r"row host=b seq=3, column 'seq': appears more than once"):
        write_trace(tmp_path / "t.parquet", table, source="test")
    assert list(tmp_path.iterdir()) == []


def test_streams_in_row_groups_without_holding_the_input(tmp_path, monkeypatch):
    monkeypatch.setattr(write_module, "ROW_GROUP_ROWS", 1000)
    produced = []

    def batches():
        for start in range(0, 10_000, 500):
            produced.append(start)
            yield _batch("h", list(range(start, start + 500)))

    out = write_trace(tmp_path / "t.parquet", batches(), source="simulate")
    assert pq.ParquetFile(out).num_row_groups == 10
    assert _keys(out) == [("h", s) for s in range(10_000)]


def test_error_keeps_existing_output(tmp_path, syn):
    out = write_trace(tmp_path / "t.parquet", [syn()], source="test")
    before = out.read_bytes()
    with pytest.raises(TraceFormatError):
        write_trace(out, [syn(seq=1), syn(seq=2, lport=70000)], source="test")
    assert out.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["t.parquet"]


def test_other_format_metadata_is_refused_on_write(tmp_path, syn):
    with pytest.raises(Exception, match="tracekit-trace/2"):
        write_trace(tmp_path / "t.parquet", [syn()], {"tracekit.format": "tracekit-trace/2"}, source="x")


def test_partitioned_directory(tmp_path, syn):
    rows = [syn("h/2", 1), syn("h 1", 2), syn("h/2", 2), syn("h 1", 1)]
    out = write_trace(tmp_path / "trace", rows, source="test", partition_by_host=True)
    assert sorted(p.name for p in out.iterdir()) == ["host=h%201", "host=h%2F2"]
    assert _keys(out) == [("h 1", 1), ("h 1", 2), ("h/2", 1), ("h/2", 2)]
    summary = validate_trace(out)
    assert [h.host for h in summary.hosts] == ["h 1", "h/2"]
    assert read_metadata(out)["tracekit.format"] == TRACE_FORMAT
    assert len(read_trace(out)) == 4


def test_absent_columns_come_back_as_typed_nulls(tmp_path):
    table = pa.table({"host": ["h"], "seq": [1], "event": ["close"], "sk": [4]})
    path = tmp_path / "foreign.parquet"
    pq.write_table(table.replace_schema_metadata({"tracekit.format": TRACE_FORMAT}), path)
    [batch] = list(iter_batches(path))
    assert batch.schema.equals(SCHEMA)
    assert batch.column("hash").null_count == 1
    [picked] = list(iter_batches(path, columns=["sk", "cpu"]))
    assert picked.schema.names == ["sk", "cpu"] and picked.to_pylist() == [{"sk": 4, "cpu": None}]


def test_foreign_file_stored_out_of_order_is_read_sorted(tmp_path):
    table = pa.table({"host": ["b", "a", "b", "a"], "seq": [2, 7, 1, 3], "event": ["close"] * 4, "sk": [1] * 4})
    path = tmp_path / "foreign.parquet"
    pq.write_table(table.replace_schema_metadata({"tracekit.format": TRACE_FORMAT}), path)
    assert _keys(path) == [("a", 3), ("a", 7), ("b", 1), ("b", 2)]
    assert validate_trace(path).rows == 4
    assert [len(b) for b in iter_batches(path, batch_size=3)] == [3, 1]


def test_trace_format_error_reads_well_and_pickles():
    error = TraceFormatError("70000 is out of range 0..65535", file="trace.jsonl", line=7, column="lport")
    assert str(error) == "trace.jsonl: line 7, column 'lport': 70000 is out of range 0..65535"
    row = TraceFormatError("missing", file="t.parquet", host="h1", seq=12, column="hash")
    assert str(row) == "t.parquet: row host=h1 seq=12, column 'hash': missing"
    assert str(pickle.loads(pickle.dumps(row))) == str(row)


events = st.sampled_from(["close", "listen", "reuseport_detach_sock"])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(st.sampled_from(["h1", "h2", "h3"]),
                       st.lists(st.integers(0, 10**12), min_size=1, max_size=30, unique=True),
                       min_size=1),
       st.randoms(use_true_random=False), events)
def test_any_order_of_unique_seqs_round_trips(tmp_path, seqs_by_host, random, event):
    rows = [{"host": h, "seq": s, "event": event, "sk": s % 7} for h, seqs in seqs_by_host.items() for s in seqs]
    random.shuffle(rows)
    out = write_trace(tmp_path / "t.parquet", rows, source="test")
    expected = sorted((r["host"], r["seq"], r["sk"]) for r in rows)
    got = [(r["host"], r["seq"], r["sk"]) for b in iter_batches(out, columns=["host", "seq", "sk"])
           for r in b.to_pylist()]
    assert got == expected


@pytest.mark.parametrize("layout", ["written", "out-of-order", "absent"])
def test_dictionaries_come_back_dictionary_encoded_with_the_same_values(tmp_path, layout):
    laddr = ["10.0.0.1", None, "::1", "10.0.0.1"]
    columns = {"host": ["h", "h", "g", "g"], "seq": [1, 2, 4, 3], "event": ["close"] * 4,
               "sk": [1, 2, 3, 4]}
    if layout != "absent":
        columns["laddr"] = laddr
    path = tmp_path / "t.parquet"
    if layout == "written":
        path = write_trace(path, pa.table(columns), source="test")
    else:
        pq.write_table(pa.table(columns).replace_schema_metadata(
            {"tracekit.format": TRACE_FORMAT}), path)
    plain = list(iter_batches(path, columns=["seq", "laddr"], batch_size=3))
    encoded = list(iter_batches(path, columns=["seq", "laddr"], batch_size=3,
                                dictionaries=("laddr", "raddr")))
    assert [b.num_rows for b in plain] == [b.num_rows for b in encoded]
    for a, b in zip(plain, encoded):
        assert b.schema.field("laddr").type == pa.dictionary(pa.int32(), pa.string())
        assert b.column("laddr").to_pylist() == a.column("laddr").to_pylist()
        assert b.column("seq").equals(a.column("seq"))


def test_columns_null_in_every_row_group_read_are_typed_nulls(tmp_path):
    """A column the statistics say is all null is not decoded (`_null_columns`)."""
    table = pa.table({"host": ["h"] * 4, "seq": [1, 2, 3, 4], "event": ["close"] * 4,
                      "sk": [1, 2, 3, 4], "sk2": pa.array([None] * 4, pa.int64()),
                      "payload": pa.array([None, None, None, b"x"], pa.binary())})
    path = write_trace(tmp_path / "t.parquet", table, source="test")
    for batch_size in (1, 3, 10):
        rows = [r for b in iter_batches(path, batch_size=batch_size) for r in b.to_pylist()]
        assert [(r["sk"], r["sk2"], r["payload"]) for r in rows] == \
            [(1, None, None), (2, None, None), (3, None, None), (4, None, b"x")]
        [only] = {b.schema for b in iter_batches(path, batch_size=batch_size)}
        assert only.equals(SCHEMA)


@pytest.mark.parametrize("dictionaries", [(), ("laddr",)])
@pytest.mark.parametrize("wanted", [["h1"], ["h0", "h2"], ["h1", "h3"], ["h0", "h1", "h2", "h3"],
                                    ["h9"]])
def test_rows_of_some_hosts_are_those_of_the_whole_read(tmp_path, monkeypatch, wanted, dictionaries):
    """`iter_batches(hosts=...)` of a multi-host file keeps exactly the rows of those hosts, in
    order, with the whole read's types: consecutive hosts (a slice), hosts with another between
    them in one row group (a copy), a host straddling row groups, and no host at all."""
    monkeypatch.setattr(write_module, "ROW_GROUP_ROWS", 10)
    sizes = {"h0": 3, "h1": 2, "h2": 4, "h3": 12}  # row groups: h0 h1 h2 h3 | h3 | h3
    batches = [_batch(h, list(range(1, 1 + n))) for h, n in sizes.items()]
    out = write_trace(tmp_path / "t.parquet", batches, {"tracekit.kernel": "6.1"}, source="test")
    assert pq.ParquetFile(out).metadata.num_row_groups == 3
    columns = ["host", "seq", "event", "laddr"]
    whole = pa.Table.from_batches(list(iter_batches(out, columns=columns, dictionaries=dictionaries)))
    expected = whole.filter(pa.compute.is_in(whole.column("host").cast(pa.string()),
                                              value_set=pa.array(wanted)))
    got = list(iter_batches(out, columns=columns, hosts=wanted, dictionaries=dictionaries))
    assert all(b.schema == whole.schema for b in got)
    table = pa.Table.from_batches(got, schema=whole.schema)
    assert table.to_pylist() == expected.to_pylist()
    assert table.num_rows == sum(sizes.get(h, 0) for h in wanted)
