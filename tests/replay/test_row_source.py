"""The row dicts a socket walk hands to the faithful path (`Columns.rows_of`) are the rows as
pyarrow spells them out, whichever rows are asked for and in whatever order: those converted
together (`likely`) and those converted one by one alike."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tracebuilder import TraceBuilder
from tracekit.replay import walk
from tracekit.replay.walk import COLUMNS, DICTIONARIES, Columns, _pylist
from tracekit.trace import write_trace
from tracekit.trace.read import iter_batches

RECORDED = Path(__file__).resolve().parents[2] / "fixtures" / "recorded"
TRACES = ("story-rolling-restart-migrate.parquet", "story-udp-connected.parquet",
          "debian-6.12-random-5-80.parquet")


def _batch(name: str) -> pa.RecordBatch:
    batches = list(iter_batches(RECORDED / name, columns=COLUMNS, dictionaries=DICTIONARIES,
                                batch_size=1 << 20))
    return pa.concat_batches(batches) if len(batches) > 1 else batches[0]


BATCHES = {name: _batch(name) for name in TRACES}


@contextmanager
def few_rows(count: int) -> Iterator[None]:
    """`walk.FEW_ROWS` set to `count` (0: every batch's likely rows made column by column)."""
    saved, walk.FEW_ROWS = walk.FEW_ROWS, count
    try:
        yield
    finally:
        walk.FEW_ROWS = saved


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(TRACES), few=st.sampled_from([0, walk.FEW_ROWS]), data=st.data())
def test_row_dicts_are_the_rows(name, few, data):
    batch = BATCHES[name]
    n = batch.num_rows
    a = data.draw(st.integers(0, n - 1))
    b = data.draw(st.integers(a + 1, n))
    cols = Columns(batch, bulk=True)
    cols.socket()  # (a socket walk has made its socket view: the likely rows come from it)
    with few_rows(few):
        source = cols.rows_of(a, b)
    expected = batch.slice(a, b - a).select(list(COLUMNS)).to_pylist()
    order = data.draw(st.permutations(range(b - a)))
    for r in order[:64]:
        assert source[r] == expected[r]
        assert list(source[r]) == list(COLUMNS)


@pytest.mark.parametrize("few", [0, walk.FEW_ROWS])
def test_both_ways_of_converting_a_row_are_taken(few):
    batch = BATCHES["story-rolling-restart-migrate.parquet"]
    cols = Columns(batch, bulk=True)
    cols.socket()
    with few_rows(few):
        source = cols.rows_of(0, batch.num_rows)
    likely = set(source.rows)
    expected = batch.select(list(COLUMNS)).to_pylist()
    for r in range(batch.num_rows):
        row = source[r]
        assert row == expected[r]
        assert list(row) == list(COLUMNS)
    assert 0 < len(likely) < batch.num_rows  # some rows converted together, some alone


@given(st.lists(st.one_of(st.none(), st.sampled_from(["10.0.0.1", "::1", "a", "b"])),
                max_size=12),
       st.lists(st.sampled_from(["x", "y", "z"]), max_size=6))
def test_a_dictionary_column_decodes_as_pyarrow_does(values, extra):
    column = pa.array(values + extra, pa.string()).dictionary_encode().slice(0, len(values))
    assert _pylist(column) == column.to_pylist() == values
    assert _pylist(column.take(pa.array(np.arange(len(values))))) == values


@pytest.mark.parametrize("few", [0, walk.FEW_ROWS])
def test_rows_are_converted_together_only_for_hosts_with_socket_layer_rows(tmp_path, few):
    """A batch of a kernel-layer host (its walk never asks for row dicts) and a socket-layer
    one: only the latter's likely rows are made beforehand, and every row reads as pyarrow's."""
    kernel = TraceBuilder("a").add("reuseport_alloc", sk=1, value=0, ret=0)
    kernel.add("reuseport_add_sock", sk=2, sk2=1, value=0, ret=0)
    for n in range(5):
        kernel.add("reuseport_select_sock", sk=1, hash=n << 29, cpu=0, observed=1 + n % 2)
    sockets = TraceBuilder("b").tcp_listeners([1, 2]).conn(40000, 7).accept(1, 40000)
    sockets.add("close", sk=1, cpu=0)
    path = write_trace(tmp_path / "t.parquet", kernel.rows + sockets.rows,
                       {"tracekit.kernel": "6.18.0"}, source="test")
    batch = next(iter_batches(path, columns=COLUMNS, dictionaries=DICTIONARIES,
                              batch_size=1 << 20))
    cols = Columns(batch, bulk=True)
    hosts = batch.column("host").to_pylist()
    with few_rows(few):
        likely = cols.likely_rows()
    assert likely and {hosts[i] for i in likely} == {"b"}
    expected = batch.select(list(COLUMNS)).to_pylist()
    first_b = hosts.index("b")
    for a, b in ((0, first_b), (first_b, batch.num_rows)):
        with few_rows(few):
            source = cols.rows_of(a, b)
        for r in range(b - a):
            assert source[r] == expected[a + r]
