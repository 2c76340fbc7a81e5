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
        for host in np.unique(ranks):
            self._add_host(names[host], batch, np.flatnonzero(ranks == host) if len(runs) else None,
                           seq, file, lines)
        if self.in_order:
            run_starts = np.concatenate(([0], runs))
            self._follow_host_order([names[ranks[i]] for i in run_starts], run_starts, batch, file, lines)

    def _add_host(self, host: str, batch, positions, seq, file, lines) -> None:
        own = seq if positions is None else seq[positions]
        steps = np.diff(own)
        previous = self.hosts.get(host)
        if previous is not None:
            steps = np.concatenate(([own[0] - previous.last_seq], steps))
        repeats = np.flatnonzero(steps == 0)
        if len(repeats):
            at = repeats[0] + (0 if previous is not None else 1)
            index = int(at if positions is None else positions[at])
            raise row_error(batch, index, DUPLICATE_SEQ, file=file, column="seq", lines=lines)
        if (steps < 0).any():
            self.unordered_hosts.add(host)
            self._disorder(batch, int(_first_index(steps < 0, positions, previous is not None)), file, lines)
        low, high = int(own.min()), int(own.max())
        if previous is None:
            self.hosts[host] = HostRange(len(own), int(own[0]), int(own[-1]), low, high)
        else:
            previous.rows += len(own)
            previous.last_seq = int(own[-1])
            previous.min_seq = min(previous.min_seq, low)
            previous.max_seq = max(previous.max_seq, high)

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


def _first_index(mask: np.ndarray, positions, has_previous: bool) -> int:
    at = int(np.flatnonzero(mask)[0]) + (0 if has_previous else 1)
    return at if positions is None else int(positions[at])


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
