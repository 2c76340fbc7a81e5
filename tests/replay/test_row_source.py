"""The row dicts a socket walk hands to the faithful path (`Columns.rows_of`) are the rows as
pyarrow spells them out, whichever rows are asked for and in whatever order: those converted
together (`likely`) and those converted one by one alike."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from tracekit.replay.walk import COLUMNS, DICTIONARIES, Columns, _pylist
from tracekit.trace.read import iter_batches

RECORDED = Path(__file__).resolve().parents[2] / "fixtures" / "recorded"
TRACES = ("story-rolling-restart-migrate.parquet", "story-udp-connected.parquet",
          "debian-6.12-random-5-80.parquet")


def _batch(name: str) -> pa.RecordBatch:
    batches = list(iter_batches(RECORDED / name, columns=COLUMNS, dictionaries=DICTIONARIES,
                                batch_size=1 << 20))
    return pa.concat_batches(batches) if len(batches) > 1 else batches[0]


BATCHES = {name: _batch(name) for name in TRACES}


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(TRACES), data=st.data())
def test_row_dicts_are_the_rows(name, data):
    batch = BATCHES[name]
    n = batch.num_rows
    a = data.draw(st.integers(0, n - 1))
    b = data.draw(st.integers(a + 1, n))
    cols = Columns(batch, bulk=True)
    cols.socket()  # (a socket walk has made its socket view: the likely rows come from it)
    source = cols.rows_of(a, b)
    expected = batch.slice(a, b - a).select(list(COLUMNS)).to_pylist()
    order = data.draw(st.permutations(range(b - a)))
    for r in order[:64]:
        assert source[r] == expected[r]
        assert list(source[r]) == list(COLUMNS)


def test_both_ways_of_converting_a_row_are_taken():
    batch = BATCHES["story-rolling-restart-migrate.parquet"]
    cols = Columns(batch, bulk=True)
    cols.socket()
    source = cols.rows_of(0, batch.num_rows)
    expected = batch.select(list(COLUMNS)).to_pylist()
    for r in range(batch.num_rows):
        assert source[r] == expected[r]
    likely = set(source.likely.tolist())
    assert 0 < len(likely) < batch.num_rows  # some rows converted together, some alone


@given(st.lists(st.one_of(st.none(), st.sampled_from(["10.0.0.1", "::1", "a", "b"])),
                max_size=12),
       st.lists(st.sampled_from(["x", "y", "z"]), max_size=6))
def test_a_dictionary_column_decodes_as_pyarrow_does(values, extra):
    column = pa.array(values + extra, pa.string()).dictionary_encode().slice(0, len(values))
    assert _pylist(column) == column.to_pylist() == values
    assert _pylist(column.take(pa.array(np.arange(len(values))))) == values
