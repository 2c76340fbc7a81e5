"""A short history of each group's membership: which event put which socket into which slot.

Explanations cite it ("socks[2] is sk 7, which moved into slot 2 when sk 3 closed at seq 120").
The engine snapshots the groups an event touches before and after it and records the difference.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from functools import cached_property
from itertools import chain, compress
from operator import attrgetter, ne

from tracekit.kernel.sock import Sock
from tracekit.kernel.sock_reuseport import SockReuseport

DEPTH = 8


@dataclass(frozen=True)
class Change:
    seq: int
    event: str
    sk: int | None
    old: tuple[int, ...] = field(repr=False)  # the live sockets before, in array order
    new: tuple[int, ...] = field(repr=False)  # and after

    @cached_property
    def moves(self) -> tuple[tuple[int, int | None, int | None], ...]:
        """(sk, from slot, to slot); None = out. Worked out when first read (explanations read
        few of the changes recorded)."""
        return _moves(self.old, self.new)

    def describe(self) -> str:
        parts = []
        for sk, old, new in self.moves:
            if old is None:
                parts.append(f"sk {sk} joined slot {new}")
            elif new is None:
                parts.append(f"sk {sk} left slot {old}")
            else:
                parts.append(f"sk {sk} moved from slot {old} to slot {new}")
        return f"seq {self.seq} {self.event} sk {self.sk}: " + ", ".join(parts)

    def moved_into(self, sk: int, slot: int) -> bool:
        return any(m[0] == sk and m[2] == slot for m in self.moves)


def _change(seq: int, event: str, sk: int | None, old: tuple[int, ...],
            new: tuple[int, ...]) -> Change:
    """`Change(seq, event, sk, old, new)` without the frozen dataclass's `__init__` (one
    `object.__setattr__` per field): one per membership change of a replay."""
    change = object.__new__(Change)
    change.__dict__.update(seq=seq, event=event, sk=sk, old=old, new=new)
    return change


_sk_id = attrgetter("sk_id")

Members = tuple[tuple[int, ...], tuple[int, ...]]  # (live in array order, closed section)
NO_MEMBERS: Members = ((), ())
Now = tuple[SockReuseport, Members, "str | None"]  # a group after an event: members, label


def members(reuse: SockReuseport) -> Members:
    """The group's sk ids: its live sockets in array order, and its closed section."""
    socks, closed = reuse.socks, reuse.num_closed_socks
    live = tuple(map(_sk_id, socks[:reuse.num_socks]))
    if not closed:
        return live, ()
    top = reuse.max_socks
    return live, tuple(map(_sk_id, socks[top - closed:top]))


Move = tuple[int, int | None, int | None]  # (sk, from slot, to slot); None = out


def _moves(old: tuple[int, ...], new: tuple[int, ...]) -> tuple[Move, ...]:
    """What took each slot of `new` that `old` held otherwise (joins and moves, by new slot), then
    who left (by old slot). A change moves one or two sockets, so only the slots that differ are
    looked up."""
    both = min(len(old), len(new))
    differ = list(compress(range(both), map(ne, old, new)))
    moves = []
    for i in chain(differ, range(both, len(new))):
        x = new[i]
        moves.append((x, old.index(x) if x in old else None, i))
    for i in chain(differ, range(both, len(old))):
        x = old[i]
        if x not in new:
            moves.append((x, i, None))
    return tuple(moves)


class GroupHistory:
    """Recent membership changes per group label, for one host."""

    def __init__(self, depth: int = DEPTH) -> None:
        self.depth = depth
        self.changes: dict[str, deque[Change]] = {}
        self.last: dict[int, tuple[int, ...]] = {}  # reuseport_id -> live sockets after the last change
        self.marks: dict[str, int] = {}  # label -> changes recorded so far
        self.views: dict[str, tuple[int, HistoryView]] = {}  # label -> (mark, its view then)

    def mark(self, label: str | None) -> int:
        """How many changes `label` has had: a view taken at one mark holds until the next."""
        return self.marks.get(label or "", 0)

    def view(self, label: str | None) -> HistoryView:
        """The recent changes of `label` as they are now, unaffected by later ones (one view
        per label and mark: it holds until the label's next change)."""
        key = label or ""
        mark = self.marks.get(key, 0)
        known = self.views.get(key)
        if known is not None and known[0] == mark:
            return known[1]
        view = HistoryView(key, tuple(self.changes.get(key, ())))
        self.views[key] = (mark, view)
        return view

    def before(self, socks: list[Sock]) -> dict[int, tuple[SockReuseport, Members]]:
        """The groups of `socks` and their `members` before an event (the token `after` and
        `Timeline.before` take)."""
        out = {}
        for sk in socks:
            reuse = sk.sk_reuseport_cb
            if reuse is not None:
                out[reuse.reuseport_id] = (reuse, members(reuse))
        return out

    def after(self, token: dict[int, tuple[SockReuseport, Members]], socks: list[Sock], label_of,
              seq: int, event: str, sk: int | None) -> dict[int, Now]:
        """Record what the event changed in the live sockets of the groups of `token` and of
        `socks`; returns those groups with their `members` and label now (for
        `Timeline.after`)."""
        now: dict[int, Now] = {}
        for rid, (reuse, _old) in token.items():
            now[rid] = (reuse, members(reuse), label_of(reuse))
        for s in socks:
            reuse = s.sk_reuseport_cb
            if reuse is not None:
                rid = reuse.reuseport_id
                known = now.get(rid)
                if known is None or known[0] is not reuse:
                    now[rid] = (reuse, members(reuse), label_of(reuse))
        record = self.record
        for rid, (reuse, (new, _closed), label) in now.items():
            before = token.get(rid)
            record(rid, before[1][0] if before is not None else None, new,
                   not (reuse.num_socks + reuse.num_closed_socks), label, seq, event, sk)
        return now

    def record(self, rid: int, old: tuple[int, ...] | None, new: tuple[int, ...], freed: bool,
               label: str | None, seq: int, event: str, sk: int | None) -> None:
        """One group's part of `after`: its live sockets were `old` before the event (None: as
        after the last change recorded) and are `new` now, under `label`; `freed`: it has no
        socket left (its id may name a new group next)."""
        last = self.last
        if old is None:
            old = last.get(rid, ())
        if freed:
            last.pop(rid, None)
        else:
            last[rid] = new
        if old == new or label is None:
            return
        log = self.changes.get(label)
        if log is None:
            log = self.changes[label] = deque(maxlen=self.depth)
        log.append(_change(seq, event, sk, old, new))
        marks = self.marks
        marks[label] = marks.get(label, 0) + 1

    def recent(self, label: str | None, upto: int | None = None) -> list[Change]:
        log = self.changes.get(label or "", ())
        return [c for c in log if upto is None or c.seq <= upto]


@dataclass(frozen=True)
class HistoryView:
    """One label's recent changes at one moment; reads like `GroupHistory.recent`."""

    label: str
    changes: tuple[Change, ...]

    def recent(self, label: str | None, upto: int | None = None) -> list[Change]:
        if (label or "") != self.label:
            return []
        return [c for c in self.changes if upto is None or c.seq <= upto]
