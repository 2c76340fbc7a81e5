"""The row-order rule that spans batches: ``seq`` strictly increases within a host.

Rows may arrive with hosts interleaved or, within a host, out of order; `SeqTracker` notes that
(so the writer can regroup and sort) and refuses a ``seq`` that repeats the previous row of its
host. A repeat further apart is found when the unordered host is sorted (`check_sorted_seq`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from tracekit.errors import TraceFormatError
from tracekit.trace.checks import row_error

__all__ = ["HostRange", "SeqTracker", "check_sorted_seq", "DUPLICATE_SEQ"]

DUPLICATE_SEQ = "repeats the previous row's seq of this host (seq must strictly increase within a host)"


@dataclass
class HostRange:
    rows: int
    first_seq: int
    last_seq: int
    min_seq: int
    max_seq: int


class SeqTracker:
    """Follows (host, seq) over a stream of batches with non-null ``host`` and ``seq``.

    ``in_order`` stays true while the stream is sorted by (host, seq) overall;
    ``unordered_hosts`` names hosts whose own rows came out of seq order;
    ``first_disorder`` locates the first row that broke the overall order.
    """

    def __init__(self) -> None:
        self.hosts: dict[str, HostRange] = {}
        self.in_order = True
        self.unordered_hosts: set[str] = set()
        self.first_disorder: TraceFormatError | None = None
        self._last_host: str | None = None
        self._visited: set[str] = set()

    def add(self, batch: pa.RecordBatch, *, file: str, lines: Sequence[int] | None = None) -> None:
        if batch.num_rows == 0:
            return
        ranks, names = _host_ranks(batch.column("host"))
        seq = batch.column("seq").to_numpy()
        runs = np.flatnonzero(np.diff(ranks)) + 1
        self._add_hosts(ranks, names, seq, batch, file, lines)
        if self.in_order:
            run_starts = np.concatenate(([0], runs))
            self._follow_host_order([names[ranks[i]] for i in run_starts], run_starts, batch, file, lines)

    def _add_hosts(self, ranks, names, seq, batch, file, lines) -> None:
        """Each host's rows in batch order, all hosts at once: rows grouped by host (hosts in
        name order), so the first offending row of the first host in name order comes first."""
        order = np.argsort(ranks, kind="stable")
        grouped_ranks, own = ranks[order], seq[order]
        starts = np.flatnonzero(np.concatenate(([True], grouped_ranks[1:] != grouped_ranks[:-1])))
        hosts = [names[rank] for rank in grouped_ranks[starts]]
        previous = [self.hosts.get(host) for host in hosts]
        before = own.copy()  # each row's predecessor in its host: the row before, or the last seen
        before[1:] = own[:-1]
        known = np.array([p is not None for p in previous])
        before[starts[known]] = [p.last_seq for p in previous if p is not None]
        compared = np.ones(len(own), bool)
        compared[starts[~known]] = False
        steps = own - before
        repeats = np.flatnonzero(compared & (steps == 0))
        if len(repeats):
            raise row_error(batch, int(order[repeats[0]]), DUPLICATE_SEQ, file=file, column="seq", lines=lines)
        backwards = compared & (steps < 0)
        if backwards.any():
            first = np.flatnonzero(backwards)
            self.unordered_hosts.update(hosts[i] for i in np.unique(np.searchsorted(starts, first, "right") - 1))
            self._disorder(batch, int(order[first[0]]), file, lines)
        ends = np.concatenate((starts[1:], [len(own)]))
        lows, highs = np.minimum.reduceat(own, starts), np.maximum.reduceat(own, starts)
        for host, entry, start, end, low, high in zip(hosts, previous, starts.tolist(), ends.tolist(),
                                                      lows.tolist(), highs.tolist()):
            if entry is None:
                self.hosts[host] = HostRange(end - start, int(own[start]), int(own[end - 1]), low, high)
            else:
                entry.rows += end - start
                entry.last_seq = int(own[end - 1])
                entry.min_seq = min(entry.min_seq, low)
                entry.max_seq = max(entry.max_seq, high)

    def _follow_host_order(self, run_hosts, run_starts, batch, file, lines) -> None:
        for host, start in zip(run_hosts, run_starts):
            last = self._last_host
            if last is not None and host != last and (host < last or host in self._visited):
                self._disorder(batch, int(start), file, lines)
                return
            self._visited.add(host)
            self._last_host = host

    def _disorder(self, batch, index: int, file, lines) -> None:
        self.in_order = False
        if self.first_disorder is None:
            self.first_disorder = row_error(
                batch, index, "rows are not sorted by (host, seq)", file=file, column="seq", lines=lines
            )


def _host_ranks(hosts: pa.Array) -> tuple[np.ndarray, list[str]]:
    """Each row's host as an index into the sorted list of distinct host names."""
    if not pa.types.is_dictionary(hosts.type):
        hosts = hosts.dictionary_encode()
    dictionary = hosts.dictionary.to_pylist()
    names = sorted(set(dictionary))
    position = {name: rank for rank, name in enumerate(names)}
    rank_of = np.array([position[name] for name in dictionary], dtype=np.int64)
    return rank_of[hosts.indices.to_numpy()], names


def check_sorted_seq(host: str, seq: np.ndarray, *, file: str) -> None:
    """Refuse a repeated seq in one host's rows, already sorted by seq."""
    repeats = np.flatnonzero(np.diff(seq) == 0)
    if len(repeats):
        raise TraceFormatError(
            "appears more than once for this host (seq must strictly increase within a host)",
            file=file, host=host, seq=int(seq[repeats[0]]), column="seq",
        )
