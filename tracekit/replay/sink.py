"""Where decisions go: counts per host and group, load per socket, migration outcomes, the first
mismatches, every mismatch and unknown, and (only when asked) every decision as Arrow batches.

Decisions are applied in input-row order when a batch ends (`flush`), whatever order the engine
found them in. Bulk-matched rows arrive as counts per group state (and, with results, as Arrow
columns without a Python object per row).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Callable, NamedTuple

import numpy as np
import pyarrow as pa

from tracekit.kernel.sock_reuseport import SockReuseport
from tracekit.replay.decision import DECISION_SCHEMA, FIELDS, Decision

MAX_MISMATCHES = 20
_COUNT = {"match": 1, "mismatch": 2, "unknown": 3}
RESET_EVENTS = frozenset({"reset", "reuseport_migrate_sock"})  # observed -1: the kernel reset it


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
    resets: int = 0  # connections the kernel reset (observed), as `--fail-on resets>N` counts
    reuse: SockReuseport | None = None


class _Touch(NamedTuple):
    """A group whose decisions a batch matched in bulk: its stats follow its latest state."""

    host: str
    label: str
    reuseport_id: int | None


_row_of = itemgetter(0)  # an event's input row


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
        self._events: list[tuple[int, Decision | _Touch, SockReuseport | None]] = []

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
        """One decision of input row `row` (applied in row order at `flush`)."""
        self._events.append((row, d, reuse))

    def add_matches(self, host: str, label: str, reuseport_id: int | None,
                    reuse: SockReuseport | None, count: int, last_row: int) -> None:
        """`count` bulk-decided selections that matched, on one group state; `last_row` is the
        last of them (the group's state is as of that row)."""
        stats = self.group(host, label, None, None)
        self._count(host, stats, "match", count)
        self._events.append((last_row, _Touch(host, label, reuseport_id), reuse))

    def add_match_counts(self, host: str,
                         counts: dict[tuple[str | None, int, int, bool], list[int]],
                         offset: int = 0) -> None:
        """Observations of host `host` that matched, counted without a `Decision` each (for a
        sink that keeps no results): `counts` maps (group, reuseport_id, expected, reset: a
        `reset` row) to [how many, the last of their input rows, less `offset`]. What `add` of
        each one's `Decision` gives at `flush`: counts, load and resets are sums, which no order
        changes, and a group's `reuseport_id` is left by the last row that names one (>= 0),
        so that row alone sets it, in row order with the batch's other decisions."""
        assert self.results is None, "a sink that keeps results needs the Decision"
        latest: dict[str, tuple[int, int]] = {}  # group: (its last row naming an id, the id)
        for (group, rid, expected, reset), (count, last) in counts.items():
            stats = None
            if group is not None:
                stats = self.group(host, group, None, None)
                if expected >= 0:
                    stats.load[str(expected)] += count
                if reset:  # observed -1, as it matched
                    stats.resets += count
                if rid >= 0 and last > latest.get(group, (-1, -1))[0]:
                    latest[group] = (last, rid)
            self._count(host, stats, "match", count)
        for group, (last, rid) in latest.items():
            self._events.append((last + offset, _Touch(host, group, rid), None))

    def add_load(self, host: str, label: str, sk: int, count: int) -> None:
        """`count` matched decisions expected on socket `sk` of group `label`."""
        self.group(host, label, None, None).load[str(sk)] += count

    def add_rows(self, rows: np.ndarray, batch: pa.RecordBatch) -> None:
        """Bulk decisions as results (`DECISION_SCHEMA`), one per input row of `rows`."""
        if self.results is not None and len(rows):
            self._pending.append((np.asarray(rows), batch))

    def _apply(self, d: Decision, row: int, reuse: SockReuseport | None) -> None:
        stats = None
        if d.group is not None:
            stats = self.group(d.host, d.group, d.reuseport_id, None, reuse)
            # a `ret` decision's expected value is a return code, not a socket: no load
            if d.expected >= 0 and d.verdict != "unknown" and d.reason != "ret":
                stats.load[str(d.expected)] += 1
            if d.observed < 0 and d.event in RESET_EVENTS:
                stats.resets += 1
        self._count(d.host, stats, d.verdict)
        if d.verdict == "unknown":
            self.unknown_reasons[d.reason] += 1
        if d.verdict != "match":
            self.kept.append(d)
            if d.verdict == "mismatch" and len(self.first_mismatches) < self.max_mismatches:
                self.first_mismatches.append(d)
        if self.results is not None:
            self._pending_rows.append((row, d))

    def migration(self, host: str, label: str | None, outcome: str, count: int = 1) -> None:
        if label is not None:
            self.group(host, label, None, None).migrations[outcome] += count

    def flush(self) -> None:
        """Apply the decisions of one input batch in row order, and emit them as results."""
        events, self._events = self._events, []
        events.sort(key=_row_of)
        for row, item, reuse in events:
            if type(item) is _Touch:
                self.group(item.host, item.label, item.reuseport_id, None, reuse)
            else:
                self._apply(item, row, reuse)
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
