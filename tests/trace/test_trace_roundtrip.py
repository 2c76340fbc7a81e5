"""normalize -> validate -> read back: every row kept, same values, metadata set."""

from __future__ import annotations

import json

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from tracekit.trace import (
    SCHEMA, TRACE_FORMAT, iter_batches, normalize_jsonl, read_metadata, read_trace, validate_trace,
)
import tracekit


def _as_python(value):
    if value is None or value is pd.NA or (isinstance(value, float) and value != value):
        return None
    return value.item() if hasattr(value, "item") else value


def test_round_trip_keeps_every_row_and_value(basic_parquet, basic_rows):
    frame = read_trace(basic_parquet)
    assert len(frame) == len(basic_rows)
    expected = sorted(basic_rows, key=lambda row: (row["host"], row["seq"]))
    for row, (_, got) in zip(expected, frame.iterrows()):
        for column in SCHEMA.names:
            value = row.get(column)
            if column in ("payload", "prog") and value is not None:
                value = bytes.fromhex(value)
            assert _as_python(got[column]) == value, (row, column)


def test_round_trip_sets_metadata(basic_parquet):
    metadata = read_metadata(basic_parquet)
    assert metadata["tracekit.format"] == TRACE_FORMAT
    assert metadata["tracekit.source"] == "normalize"
    assert metadata["tracekit.kernel"] == "6.18.0-test"
    assert metadata["tracekit.normalized_from"] == "basic.jsonl"


def test_validate_summarises(basic_parquet, basic_rows):
    summary = validate_trace(basic_parquet)
    assert summary.rows == len(basic_rows)
    assert [(h.host, h.rows, h.first_seq, h.last_seq) for h in summary.hosts] == [
        ("kernel-h3", 6, 1, 6), ("tcp-h1", 17, 1, 17), ("udp-h2", 12, 1, 12)]
    assert dict(summary.events)["syn"] == 3
    assert dict(summary.metadata)["tracekit.format"] == TRACE_FORMAT


def test_file_is_sorted_and_dictionary_encoded(basic_parquet):
    table = pq.read_table(basic_parquet)
    assert table.schema.remove_metadata().equals(SCHEMA)
    keys = list(zip(table.column("host").to_pylist(), table.column("seq").to_pylist()))
    assert keys == sorted(keys)
    assert pa.types.is_dictionary(table.schema.field("event").type)


def test_package_level_read_trace_is_the_same(basic_parquet):
    pd.testing.assert_frame_equal(tracekit.read_trace(basic_parquet), read_trace(basic_parquet))


def test_host_option_fills_rows_without_host(write_jsonl, tmp_path, syn):
    rows = [syn(seq=1), syn(seq=2)]
    for row in rows:
        del row["host"]
    rows.append(syn(host="other", seq=1))
    out = normalize_jsonl(write_jsonl(rows), tmp_path / "t.parquet", host="default")
    assert sorted(read_trace(out)["host"].astype(str)) == ["default", "default", "other"]


def test_blank_lines_are_skipped(write_jsonl, tmp_path, syn):
    path = write_jsonl([json.dumps(syn(seq=1)), "", "   ", json.dumps(syn(seq=2))])
    assert validate_trace(normalize_jsonl(path, tmp_path / "t.parquet")).rows == 2


def test_interleaved_hosts_and_unordered_seqs_are_sorted(write_jsonl, tmp_path, syn):
    rows = [syn("b", 2), syn("a", 5), syn("b", 1), syn("a", 3), syn("a", 4)]
    out = normalize_jsonl(write_jsonl(rows), tmp_path / "t.parquet")
    batches = list(iter_batches(out, columns=["host", "seq"]))
    keys = [(b["host"], b["seq"]) for batch in batches for b in batch.to_pylist()]
    assert keys == [("a", 3), ("a", 4), ("a", 5), ("b", 1), ("b", 2)]
    validate_trace(out)
