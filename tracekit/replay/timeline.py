"""The membership of every group over `seq`, slot by slot: who joined, who moved into a hole when
another left, who went to the closed section, who left, and where each queued connection of a
stopped listener migrated.

The engine calls `Timeline.before` and `Timeline.after` around every event that can change a
group (the events `tracekit.replay.engine.MEMBERSHIP` names), `Timeline.migrations` with the
queued connections of a stopping listener the model migrated or reset (`Timeline.migration` for
one a kernel-layer row migrates). A close that migrates is split where the kernel
splits it: `reuseport_stop_listen_sock` first (the last live socket moves into the hole, the
closing one goes to the closed section), then the migrations, then `reuseport_detach_sock`.

Pure: it only reads the model's groups. `Replay.timeline()` gives the rows as a DataFrame
(`COLUMNS`); `slots()` turns one group's rows back into its membership after each change, and
`membership_at()` answers "what was the group like at seq N?".
"""

from __future__ import annotations

import gc
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import chain, compress
from operator import ne
from typing import Any

import numpy as np
import pyarrow as pa

from tracekit.kernel.sock_reuseport import SockReuseport
from tracekit.replay.history import NO_MEMBERS, Members, Now, members

__all__ = ["COLUMNS", "CHANGES", "Timeline", "Membership", "apply_change", "slots", "membership_at",
           "timeline_frame"]

CHANGES = ("joined", "moved", "closed", "reopened", "left", "migrated", "reset",
           "migration-unknown")
"""What a row says happened to `sk`: joined a live slot; moved from one live slot to another (into
a hole); went from live slot `from_slot` to the closed section; came back from the closed section
into live slot `to_slot`; left the group (from live slot `from_slot`, or from the closed section
when `from_slot` is null); or, for a stopped listener's queued connection `flow`: migrated to
`to_sk`, was reset (no live socket to take it), or could not be predicted (the trace lacks the
hash)."""

COLUMNS = ("host", "group", "reuseport_id", "seq", "event", "cause", "sk", "change", "from_slot",
           "to_slot", "to_sk", "flow")
_SCHEMA = pa.schema([
    ("host", pa.string()), ("group", pa.string()), ("reuseport_id", pa.int64()),
    ("seq", pa.int64()), ("event", pa.string()), ("cause", pa.int64()), ("sk", pa.int64()),
    ("change", pa.string()), ("from_slot", pa.int64()), ("to_slot", pa.int64()),
    ("to_sk", pa.int64()), ("flow", pa.string()),
])

_CHANGE, _MIGRATIONS = 0, 1  # kinds of `Timeline` log entries: a group's change, the
# migrations of one stopping listener


def _diff(old: Members, new: Members) -> list[tuple[int, str, int | None, int | None]]:
    """(sk, change, from_slot, to_slot) taking `old` to `new`: moves and joins by new slot, then
    sockets that went to the closed section, then those that left, by old position. A change
    touches a slot or two of the array, so only the slots that differ are looked at."""
    (old_live, old_closed), (new_live, new_closed) = old, new
    both = min(len(old_live), len(new_live))
    differ = list(compress(range(both), map(ne, old_live, new_live)))
    rows: list[tuple[int, str, int | None, int | None]] = []
    for slot in chain(differ, range(both, len(new_live))):
        sk = new_live[slot]
        if sk in old_live:
            rows.append((sk, "moved", old_live.index(sk), slot))
        else:
            rows.append((sk, "reopened" if sk in old_closed else "joined", None, slot))
    for slot in chain(differ, range(both, len(old_live))):
        sk = old_live[slot]
        if sk in new_live:
            continue
        rows.append((sk, "closed" if sk in new_closed else "left", slot, None))
    if old_closed:
        for sk in old_closed:
            if sk not in new_closed and sk not in new_live:
                rows.append((sk, "left", None, None))
    return rows


def _rows_of_entries(entries: Iterable[tuple]) -> list[tuple]:
    """The rows (`COLUMNS`) of `Timeline` log entries, in their order."""
    rows: list[tuple] = []
    add = rows.append
    for entry in entries:
        if entry[0] == _MIGRATIONS:
            _tag, host, group, rid, seq, event, cause, listener, moves = entry
            for _listener, (laddr, lport, raddr, rport), to, unknown, _group in moves:
                change = ("migration-unknown" if unknown is not None
                          else "migrated" if to >= 0 else "reset")
                text = (None if laddr is None and raddr is None
                        else f"{raddr}:{rport} -> {laddr}:{lport}")
                add((host, group, rid, seq, event, cause, listener, change, None, None,
                     to if unknown is None else None, text))
            continue
        _tag, host, group, rid, seq, event, cause, old, new = entry
        for sk, change, from_slot, to_slot in _diff(old, new):
            add((host, group, rid, seq, event, cause, sk, change, from_slot, to_slot, None,
                 None))
    return rows


@dataclass
class _Pending:
    """The groups one membership event touches, as they were when it began (or at its last
    intermediate snapshot)."""

    host: str
    groups: dict[int, tuple[SockReuseport, str | None, Members]]
    seq: int
    event: str
    cause: int | None
    label_of: Any


class Timeline:
    """Collects membership changes and migrations of every host while a replay runs.

    A replay logs each group's membership before and after each change (a tuple append); the
    rows (`rows`, `table()`) are worked out from the log when first asked for."""

    def __init__(self) -> None:
        self._log: list[tuple] = []  # (_CHANGE, host, group, rid, seq, event, cause, old, new)
        # or (_MIGRATIONS, host, group, rid, seq, event, cause, listener, moves): in row order
        self._rows: dict[str, list] = {name: [] for name in COLUMNS}
        self._done = 0  # log entries already in `_rows`
        self.last: dict[tuple[str, int], tuple[str | None, Members]] = {}
        self.last_seq: dict[str, int] = {}
        self._pending: _Pending | None = None

    def __len__(self) -> int:
        return len(self.rows["seq"])

    @property
    def rows(self) -> dict[str, list]:
        """The rows, column by column (`COLUMNS`), in replay order."""
        if self._done < len(self._log):
            self._make_rows()
        return self._rows

    # -- the engine's hooks -----------------------------------------------------------------------
    def before(self, host: str, token: dict[int, tuple[SockReuseport, Members]], label_of: Any,
               seq: int, event: str, cause: int | None) -> None:
        """An event that can change the groups of `token` (`GroupHistory.before`) begins."""
        shared = self.shared
        self.begin(host, {rid: (reuse, label_of(reuse), shared(host, rid, now))
                          for rid, (reuse, now) in token.items()}, seq, event, cause, label_of)

    def begin(self, host: str, groups: dict[int, tuple[SockReuseport, str | None, Members]],
              seq: int, event: str, cause: int | None, label_of: Any) -> None:
        """`before`, the groups read already: each with its label and `members` (`shared`)."""
        self._pending = _Pending(host, groups, seq, event, cause, label_of)

    def take(self) -> _Pending | None:
        """The event `begin` opened (None: none), closed: the caller records its end."""
        pending, self._pending = self._pending, None
        return pending

    def shared(self, host: str, rid: int, now: Members) -> Members:
        """`now`, or the equal tuple recorded after the group's last change (one tuple for both
        sides of consecutive changes)."""
        known = self.last.get((host, rid))
        return known[1] if known is not None and known[1] == now else now

    def after(self, socks: Iterable[Any], now: dict[int, Now] | None = None) -> None:
        """The event ends: the groups it began with and those `socks` are in now are recorded;
        `now`: groups whose members and label are known already (`GroupHistory.after`)."""
        pending, self._pending = self._pending, None
        if pending is None:
            return
        for sk in socks:
            reuse = sk.sk_reuseport_cb
            if reuse is not None and reuse.reuseport_id not in pending.groups:
                last = self.last.get((pending.host, reuse.reuseport_id))
                pending.groups[reuse.reuseport_id] = (reuse, last[0] if last else None,
                                                      last[1] if last else NO_MEMBERS)
        self._flush(pending, final=True, known=now)

    def migration(self, host: str, seq: int, group: str | None, listener: int, to: int,
                  unknown: str | None, flow: tuple, event: str | None = None,
                  reuseport_id: int | None = None) -> None:
        """A queued connection of `listener` went to `to` (-1: reset; `unknown`: not predicted)."""
        self.migrations(host, seq, group, listener, [(listener, flow, to, unknown, group)], event,
                        reuseport_id)

    def migrations(self, host: str, seq: int, group: str | None, listener: int,
                   moves: Sequence[tuple[int, tuple, int, str | None, str | None]],
                   event: str | None = None, reuseport_id: int | None = None) -> None:
        """The queued connections of `listener` in `group`, each (`listener`, `flow`, `to`,
        `unknown`, `group`) as `tracekit.kernel.socket_layer.host.Migration` has them: it went
        to `to` (-1: reset; `unknown`: not predicted); their rows are made when first asked for.
        Inside a membership event (a close) the changes so far are recorded first: the kernel
        migrates after `reuseport_stop_listen_sock` and before `reuseport_detach_sock`, and
        nothing changes a group between two migrations of one stopping listener
        (`inet_csk_listen_stop()`), so `moves` are all of its migrations."""
        pending = self._pending if self._pending is not None and self._pending.host == host else None
        if pending is not None:
            self._flush(pending, final=False)
            event = pending.event
        if group is None:
            return  # a group no bind has named yet (and never will): nothing to show
        rid = next((r for r, (_reuse, label, _m) in (pending.groups.items() if pending else ())
                    if label == group), reuseport_id)
        event = event or "close"
        cause = pending.cause if pending else listener
        self._log.append((_MIGRATIONS, host, group, rid, seq, event, cause, listener, moves))

    def seen(self, host: str, seq: int) -> None:
        """The last seq replayed on `host` (charts run to it)."""
        self.last_seq[host] = max(seq, self.last_seq.get(host, seq))

    def seen_batch(self, batch: pa.RecordBatch) -> None:
        """`seen` for the last row of each host's run in a batch sorted by (host, seq)."""
        if not batch.num_rows:
            return
        hosts = batch.column("host")
        if pa.types.is_dictionary(hosts.type):
            idx = hosts.indices.to_numpy(zero_copy_only=False)
            names = hosts.dictionary.to_pylist()
        else:
            values = hosts.to_pylist()
            names = sorted(set(values))
            idx = np.array([names.index(v) for v in values])
        seqs = batch.column("seq").to_numpy(zero_copy_only=False)
        ends = np.append(np.flatnonzero(idx[1:] != idx[:-1]), len(idx) - 1)
        for end in ends.tolist():
            self.seen(names[idx[end]], int(seqs[end]))

    # -- rows -------------------------------------------------------------------------------------
    def _flush(self, pending: _Pending, final: bool,
               known: dict[int, Now] | None = None) -> None:
        for rid, (reuse, label, old) in list(pending.groups.items()):
            seen = known.get(rid) if known is not None else None
            fresh = seen is None or seen[0] is not reuse
            new = members(reuse) if fresh else seen[1]
            if not final and new == old:
                continue  # before the migrations of a close: nothing moved, nothing renamed
            freed = reuse.num_socks + reuse.num_closed_socks == 0
            if final:
                self.record(pending.host, rid, label, old, new,
                            pending.label_of(reuse) if fresh else seen[2], freed, pending.seq,
                            pending.event, pending.cause)
                continue
            now_label = label if freed else (pending.label_of(reuse) or label)
            if new != old and now_label is not None:  # (None: a group no bind has named)
                self._log.append((_CHANGE, pending.host, now_label, rid, pending.seq,
                                  pending.event, pending.cause, old, new))
            pending.groups[rid] = (reuse, now_label, new)

    def record(self, host: str, rid: int, label: str | None, old: Members, new: Members,
               now_label: str | None, freed: bool, seq: int, event: str,
               cause: int | None) -> None:
        """The end of an event for one group: `old` its members when it began (or at the
        migrations of a close) under `label`, `new` its members now under `now_label`; `freed`:
        no socket is left in it (the label it had names its last row)."""
        if freed or now_label is None:
            now_label = label
        if new != old and now_label is not None:  # (None: a group no bind has named)
            self._log.append((_CHANGE, host, now_label, rid, seq, event, cause, old, new))
        if freed:
            self.last.pop((host, rid), None)  # the id may name a new group next
        else:
            self.last[(host, rid)] = (now_label, new)

    def _make_rows(self) -> None:
        """The rows of the log entries not yet made into rows, with the collector paused: the
        rows make no cycles, and the full collections their many tuples set off would walk the
        whole model state of the replay that logged them (0.44 s of 0.63 for 150 fleet hosts)."""
        paused = gc.isenabled()
        gc.disable()
        try:
            rows = _rows_of_entries(self._log[self._done:])
            self._done = len(self._log)
            if rows:
                for name, column in zip(COLUMNS, zip(*rows)):
                    self._rows[name].extend(column)
        finally:
            if paused:
                gc.enable()

    def rows_for(self, keys: Iterable[tuple[str, str]]) -> dict[str, list]:
        """The rows of the groups `keys` ((host, group) pairs) alone, column by column, in
        replay order: what `rows` holds for them, without making the rows of the others (a
        report details 40 groups of a 600-host fleet's 3,000)."""
        wanted = set(keys)
        rows = [row for row in zip(*(self._rows[name] for name in COLUMNS))
                if (row[0], row[1]) in wanted] if self._rows["host"] else []
        rows += _rows_of_entries([entry for entry in self._log[self._done:]
                                  if (entry[1], entry[2]) in wanted])
        columns = list(zip(*rows)) if rows else [() for _ in COLUMNS]
        return {name: list(column) for name, column in zip(COLUMNS, columns)}

    # -- results ----------------------------------------------------------------------------------
    def table(self, only: Iterable[tuple[str, str]] | None = None) -> pa.Table:
        """The rows as an Arrow table; `only`: just those (host, group) pairs' (`rows_for`)."""
        rows = self.rows if only is None else self.rows_for(only)
        return pa.table({name: pa.array(rows[name], type=_SCHEMA.field(name).type)
                         for name in COLUMNS}, schema=_SCHEMA)

    def made(self) -> Timeline:
        """Every row made now and the log dropped: a Dask task does this before it sends its
        part, so the rows are worked out in the workers, side by side, not one part after
        another in the client (`merged` only joins them). Returns self."""
        self.rows  # noqa: B018  (makes the rows)
        self._log, self._done = [], 0
        return self

    @classmethod
    def merged(cls, parts: Sequence[Timeline | None]) -> Timeline | None:
        """One timeline from per-host timelines (hosts never share groups), in the given order:
        their rows (`made` in the workers, or made here), column by column."""
        if any(part is None for part in parts):
            return None
        out = cls()
        for part in parts:
            rows = part.rows  # type: ignore[union-attr]
            for name in COLUMNS:
                out._rows[name].extend(rows[name])
            out.last_seq.update(part.last_seq)  # type: ignore[union-attr]
        return out


def timeline_frame(timeline: Timeline | None,
                   only: Iterable[tuple[str, str]] | None = None) -> Any:
    """The rows as a pandas DataFrame (`COLUMNS`; nullable integers), in replay order; `only`:
    just those (host, group) pairs' rows."""
    table = (timeline if timeline is not None else Timeline()).table(only)
    import pandas as pd

    return table.to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get)


@dataclass(frozen=True)
class Membership:
    """A group at one moment: live sockets in array order and the closed section."""

    seq: int
    live: tuple[int, ...]
    closed: tuple[int, ...]


def _rows_of(frame: Any, host: str | None, group: str) -> Any:
    mask = frame["group"] == group
    if host is not None:
        mask &= frame["host"] == host
    return frame.loc[mask]


def _int(value: Any) -> int | None:
    import pandas as pd

    return None if pd.isna(value) else int(value)


def apply_change(live: list[int | None], closed: list[int], sk: int, change: str,
                 from_slot: int | None, to_slot: int | None) -> None:
    """Apply one row to a group's live slots (None: a hole) and closed section, in place."""
    if from_slot is not None and from_slot < len(live) and live[from_slot] == sk:
        live[from_slot] = None
    if change == "closed":
        closed.append(sk)
    elif change in ("reopened", "left") and sk in closed:
        closed.remove(sk)
    if to_slot is not None:
        live.extend([None] * (to_slot + 1 - len(live)))
        live[to_slot] = sk


def slots(frame: Any, group: str, host: str | None = None) -> list[Membership]:
    """The group's membership after each seq at which it changed, rebuilt from its rows."""
    live: list[int | None] = []
    closed: list[int] = []
    out: list[Membership] = []
    rows = _rows_of(frame, host, group)
    for seq, part in rows.groupby("seq", sort=True):
        for sk, change, from_slot, to_slot in part[["sk", "change", "from_slot",
                                                     "to_slot"]].itertuples(index=False):
            apply_change(live, closed, int(sk), change, _int(from_slot), _int(to_slot))
        while live and live[-1] is None:
            live.pop()
        out.append(Membership(int(seq), tuple(-1 if s is None else s for s in live), tuple(closed)))
    return out


def membership_at(frame: Any, group: str, seq: int, host: str | None = None) -> Membership:
    """The group as it was after the events up to and including `seq`."""
    state = Membership(seq, (), ())
    for snap in slots(frame, group, host):
        if snap.seq > seq:
            break
        state = snap
    return Membership(seq, state.live, state.closed)
