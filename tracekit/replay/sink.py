"""Where decisions go: counts per host and group, load per socket, migration outcomes, the first
mismatches, every mismatch and unknown, and (only when asked) every decision as Arrow batches.

Bulk-matched rows arrive as NumPy arrays and are only counted (and, with results, turned into
Arrow columns without a Python object per row).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pyarrow as pa

from tracekit.kernel.sock_reuseport import SockReuseport
from tracekit.replay.decision import DECISION_SCHEMA, FIELDS, Decision

MAX_MISMATCHES = 20
_COUNT = {"match": 1, "mismatch": 2, "unknown": 3}


def _counts() -> list[int]:
    return [0, 0, 0, 0]  # decisions, matched, mismatched, unknown


@dataclass
class GroupStats:
    host: str
    group: str
    reuseport_id: int | None
    proto: str
    counts: list[int] = field(default_factory=_counts)
    load: Counter = field(default_factory=Counter)
    migrations: dict[str, int] = field(default_factory=lambda: {"migrated": 0, "reset": 0})
    reuse: SockReuseport | None = None


class DecisionSink:
    def __init__(self, *, max_mismatches: int = MAX_MISMATCHES,
                 results: Callable[[pa.RecordBatch], None] | None = None) -> None:
        self.max_mismatches = max_mismatches
        self.results = results
        self.totals = _counts()
        self.hosts: dict[str, list[int]] = {}
        self.groups: dict[tuple[str, str], GroupStats] = {}
        self.unknown_reasons: Counter = Counter()
        self.first_mismatches: list[Decision] = []
        self.kept: list[Decision] = []  # every mismatch and unknown
        self._pending: list[tuple[np.ndarray, pa.RecordBatch]] = []
        self._pending_rows: list[tuple[int, Decision]] = []

    def group(self, host: str, label: str, reuseport_id: int | None, proto: str | None,
              reuse: SockReuseport | None = None) -> GroupStats:
        key = (host, label)
        stats = self.groups.get(key)
        if stats is None:
            proto = proto or label.split(" ", 1)[0]
            stats = self.groups[key] = GroupStats(host, label, reuseport_id, proto)
        if reuseport_id is not None and reuseport_id >= 0:
            stats.reuseport_id = reuseport_id
        if reuse is not None:
            stats.reuse = reuse
        return stats

    def _count(self, host: str, group: GroupStats | None, verdict: str, n: int = 1) -> None:
        i = _COUNT[verdict]
        for counts in (self.totals, self.hosts.setdefault(host, _counts()),
                       group.counts if group is not None else None):
            if counts is not None:
                counts[0] += n
                counts[i] += n

    def add(self, d: Decision, row: int, reuse: SockReuseport | None = None) -> None:
        stats = None
        if d.group is not None:
            stats = self.group(d.host, d.group, d.reuseport_id, None, reuse)
            if d.expected >= 0 and d.verdict != "unknown":
                stats.load[str(d.expected)] += 1
        self._count(d.host, stats, d.verdict)
        if d.verdict == "unknown":
            self.unknown_reasons[d.reason] += 1
        if d.verdict != "match":
            self.kept.append(d)
            if d.verdict == "mismatch" and len(self.first_mismatches) < self.max_mismatches:
                self.first_mismatches.append(d)
        if self.results is not None:
            self._pending_rows.append((row, d))

    def add_bulk(self, host: str, label: str, reuseport_id: int, rows: np.ndarray,
                 seqs: np.ndarray, sks: np.ndarray, expected: np.ndarray, reasons: np.ndarray,
                 reuse: SockReuseport | None = None) -> None:
        """Rows whose expected socket equals the observed one (all matches)."""
        n = len(rows)
        if not n:
            return
        stats = self.group(host, label, reuseport_id, None, reuse)
        self._count(host, stats, "match", n)
        ids, counts = np.unique(expected[expected >= 0], return_counts=True)
        for sk, c in zip(ids.tolist(), counts.tolist()):
            stats.load[str(sk)] += c
        if self.results is None:
            return
        nulls_s = pa.nulls(n, pa.string())
        nulls_i = pa.nulls(n, pa.int32())
        batch = pa.RecordBatch.from_arrays([
            pa.array(np.full(n, host, dtype=object), pa.string()), pa.array(seqs, pa.int64()),
            pa.array(np.full(n, "reuseport_select_sock", dtype=object), pa.string()),
            nulls_s, nulls_i, nulls_s, nulls_i, pa.array(sks, pa.int64()),
            pa.array(np.full(n, label, dtype=object), pa.string()),
            pa.array(np.full(n, reuseport_id, dtype=np.int64)), pa.array(expected, pa.int64()),
            pa.array(expected, pa.int64()), pa.array(np.full(n, "match", dtype=object), pa.string()),
            pa.array(reasons, pa.string()), nulls_s,
        ], schema=DECISION_SCHEMA)
        self._pending.append((np.asarray(rows), batch))

    def migration(self, host: str, label: str | None, outcome: str) -> None:
        if label is not None:
            self.group(host, label, None, None).migrations[outcome] += 1

    def flush(self) -> None:
        """Emit the decisions of one input batch, in row order."""
        if self.results is None or (not self._pending and not self._pending_rows):
            return
        parts = list(self._pending)
        if self._pending_rows:
            rows = np.array([r for r, _ in self._pending_rows], dtype=np.int64)
            records = [d for _, d in self._pending_rows]
            columns = {name: [getattr(r, name) for r in records] for name in FIELDS}
            parts.append((rows, pa.RecordBatch.from_pydict(columns, schema=DECISION_SCHEMA)))
        self._pending, self._pending_rows = [], []
        table = pa.Table.from_batches([b for _, b in parts], schema=DECISION_SCHEMA)
        order = np.argsort(np.concatenate([r for r, _ in parts]), kind="stable")
        for batch in table.take(pa.array(order)).combine_chunks().to_batches():
            self.results(batch)
