"""A group's membership over seq as the reports show it: one plain line per seq at which the group
changed (terminal and HTML), and the lane chart of `tracekit.report.timeline_chart`.

Reads the rows of `Replay.timeline()` (`tracekit.replay.timeline.COLUMNS`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Step", "steps_of", "describe_step", "group_frames", "group_key", "elide", "elided_steps"]


@dataclass(frozen=True)
class Step:
    """Everything that happened to one group at one seq."""

    seq: int
    event: str
    cause: int | None
    changes: tuple[tuple[int, str, int | None, int | None], ...]  # (sk, change, from, to)
    migrations: tuple[tuple[int, str, int | None], ...]  # (listener, change, to_sk)


def _int(value: Any) -> int | None:
    if value is None:
        return None
    try:
        import pandas as pd

        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return int(value)


def group_key(group: Mapping[str, Any]) -> tuple[str, str]:
    """A summary group entry's key in `group_frames`: (host, group)."""
    return str(group.get("host")), str(group.get("group"))


def group_frames(frame: Any, only: Iterable[tuple[str, str]] | None = None
                 ) -> dict[tuple[str, str], Any]:
    """The timeline's rows split by (host, group); `only`: just those groups (a report that
    details 40 groups of a 600-host fleet's 3,000 splits off only theirs)."""
    if frame is None or not len(frame):
        return {}
    keys = None if only is None else set(only)
    if keys is not None:
        frame = frame[frame["host"].isin({h for h, _ in keys}) & frame["group"].isin({g for _, g in keys})]
    parts = {(str(h), str(g)): part for (h, g), part in frame.groupby(["host", "group"], sort=False)}
    return parts if keys is None else {key: part for key, part in parts.items() if key in keys}


_STEP_COLUMNS = ("seq", "event", "cause", "sk", "change", "from_slot", "to_slot", "to_sk")


def steps_of(rows: Any) -> Iterator[Step]:
    """One `Step` per seq of one group's rows, in seq order."""
    return _steps(rows, 0, len(rows))


def _steps(rows: Any, start: int, stop: int) -> Iterator[Step]:
    """`steps_of` rows `start:stop` (positions): read column by column, each column's slice
    converted at once (a frame's row tuples cost a report of 40 groups a second)."""
    columns = [rows[name].array[start:stop].tolist() for name in _STEP_COLUMNS]
    current: list[Any] = []
    for row in zip(*columns):
        if current and current[0][0] != row[0]:
            yield _step(current)
            current = []
        current.append(row)
    if current:
        yield _step(current)


def elided_steps(rows: Any, head: int, tail: int) -> tuple[list[Step], int, list[Step], int]:
    """`elide(list(steps_of(rows)), head, tail)` and the number of steps, making only the steps
    shown: a long history has tens of thousands."""
    import numpy as np

    seq = np.asarray(rows["seq"], dtype=np.int64)
    total = int(np.count_nonzero(seq[1:] != seq[:-1])) + 1 if len(seq) else 0
    if total <= head + tail + 1:
        return list(steps_of(rows)), 0, [], total
    starts = np.flatnonzero(seq[1:] != seq[:-1]) + 1  # where each step but the first begins
    first = list(_steps(rows, 0, int(starts[head - 1]))) if head else []
    last = list(_steps(rows, int(starts[total - tail - 1]), len(rows))) if tail else []
    return first, total - head - tail, last, total


def _step(rows: list[tuple]) -> Step:
    seq, event, cause = rows[0][0], rows[0][1], _int(rows[0][2])
    changes, migrations = [], []
    for _seq, _event, _cause, sk, change, from_slot, to_slot, to_sk in rows:
        if change in ("migrated", "reset", "migration-unknown"):
            migrations.append((int(sk), str(change), _int(to_sk)))
        else:
            changes.append((int(sk), str(change), _int(from_slot), _int(to_slot)))
    return Step(int(seq), str(event), cause, tuple(changes), tuple(migrations))


_PHRASES = {
    "joined": "sk {sk} joined slot {to}",
    "moved": "sk {sk} moved from slot {frm} to slot {to}",
    "closed": "sk {sk} left slot {frm} for the closed section",
    "reopened": "sk {sk} came back from the closed section to slot {to}",
}


_COMPACT = {
    "joined": "sk {sk} joined [{to}]",
    "moved": "sk {sk} [{frm}]->[{to}]",
    "closed": "sk {sk} [{frm}]->closed",
    "reopened": "sk {sk} closed->[{to}]",
}


def describe_step(step: Step, compact: bool = False) -> str:
    """``seq 25 close sk 0: sk 3 moved from slot 3 to slot 0, sk 0 left slot 0 for the closed
    section, 4 queued connections of sk 0 migrated to sk 3, sk 0 left the group (from the closed
    section)``; `compact`: ``seq 25 close sk 0: sk 3 [3]->[0], sk 0 [0]->closed, 4 queued of
    sk 0 -> sk 3, sk 0 left``."""
    parts = []
    migrations_said = False
    for sk, change, frm, to in step.changes:
        if change == "left":
            if not migrations_said:
                parts += _migrations(step, compact)
                migrations_said = True
            where = f"slot {frm}" if frm is not None else "the closed section"
            parts.append(f"sk {sk} left" + (f" [{frm}]" if frm is not None else "") if compact
                         else f"sk {sk} left the group (from {where})")
        else:
            parts.append((_COMPACT if compact else _PHRASES)[change].format(sk=sk, frm=frm, to=to))
    if not migrations_said:
        parts += _migrations(step, compact)
    who = f" sk {step.cause}" if step.cause is not None else ""
    return f"seq {step.seq} {step.event}{who}: " + ", ".join(parts)


def _migrations(step: Step, compact: bool = False) -> list[str]:
    """``4 queued connections of sk 0 migrated to sk 3``, or, when they went different ways,
    ``3 queued connections of sk 1: 2 migrated to sk 4, 1 reset``."""
    by_listener: dict[int, Counter] = {}
    for listener, change, to in step.migrations:
        by_listener.setdefault(listener, Counter())[(change, -1 if to is None else to)] += 1
    out = []
    for listener, counts in by_listener.items():
        total = sum(counts.values())
        noun = "queued" if compact else "queued connection" if total == 1 else "queued connections"
        ways = [(_SHORT_WAYS if compact else _WAYS)[change].format(to=to)
                for change, to in sorted(counts)]
        if len(counts) == 1:
            out.append(f"{total} {noun} of sk {listener} {ways[0]}")
        else:
            ways = [f"{n} {way}" for way, n in zip(ways, (counts[k] for k in sorted(counts)))]
            out.append(f"{total} {noun} of sk {listener}: {', '.join(ways)}")
    return out


_WAYS = {"migrated": "migrated to sk {to}", "reset": "reset",
         "migration-unknown": "not predicted (no hash)"}
_SHORT_WAYS = {"migrated": "-> sk {to}", "reset": "reset", "migration-unknown": "unknown"}


def elide(items: list[Any], head: int, tail: int) -> tuple[list[Any], int, list[Any]]:
    """(first `head`, how many are left out, last `tail`), or (all, 0, []) when they fit."""
    if len(items) <= head + tail + 1:
        return items, 0, []
    return items[:head], len(items) - head - tail, items[len(items) - tail:]
