"""One host's rows of one record batch: the walk through its special rows, then its bulk selections.

A bulk row is a kernel-layer `reuseport_select_sock` with a socket, a hash, an observation, no
payload and no flow (`Columns.bulk`); every other row is special and goes through the engine's
faithful per-row path in order. Between two special rows no group changes, so each bulk row is
tagged with the `Snapshot` of the group its socket belongs to at that point; after the walk every
tagged row is decided at once (`fast.tabulate`), and only rows whose answer differs from the
observation are replayed one by one, on a copy of their snapshot.
"""

from __future__ import annotations

from itertools import compress, repeat
from operator import setitem
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tracekit.replay import fast
from tracekit.replay.decision import DECISION_SCHEMA, decoded, repeated
from tracekit.replay.state import Faithful, HostState, Snapshot
from tracekit.replay.stretch import KINDS, SYN, SocketColumns, SocketWalk

SELECT = "reuseport_select_sock"
COLUMNS = ("host", "seq", "event", "sk", "sk2", "proto", "family", "laddr", "raddr", "lport",
           "rport", "hash", "sk_hash", "cpu", "payload", "name", "value", "prog", "ret",
           "observed")
DICTIONARIES = ("laddr", "raddr")
"""Columns the replay reads dictionary-encoded (`iter_batches`): it compares addresses, and
spells out only those of the rows it replays one by one."""
REASONS = pa.array(["hash", "established-skip", "incoming-cpu"])
_DENSE = 1 << 22  # largest key space counted with bincount rather than sorted


class Columns:
    """The NumPy view of one batch that the walk reads, and its rows as dicts on demand."""

    def __init__(self, batch: pa.RecordBatch, *, bulk: bool) -> None:
        self.batch = batch
        n = batch.num_rows
        self.sk, sk_valid = _values(batch.column("sk"), -1, np.int64)
        self.sk_valid = sk_valid if sk_valid is not None else np.ones(n, dtype=bool)
        self.hash, hash_valid = _values(batch.column("hash"), 0, np.uint32)
        self.cpu, cpu_valid = _values(batch.column("cpu"), 0, np.int64)
        self.cpu_valid = cpu_valid if cpu_valid is not None else np.ones(n, dtype=bool)
        self._seq: np.ndarray | None = None
        self._hash_valid = hash_valid
        self._socket: SocketColumns | None = None
        self._socket_events: bool | None = None
        self.bulk_enabled = bulk
        self._valid = (sk_valid, hash_valid)
        self._bulk: np.ndarray | None = None
        self._observed: tuple[np.ndarray, np.ndarray | None] | None = None
        self._likely: dict[int, dict[str, Any]] | None = None  # (`likely_rows`)

    @property
    def observed(self) -> np.ndarray:
        """Each row's `observed` (-1 where null), read on first use (kernel-layer rows only)."""
        if self._observed is None:
            self._observed = _values(self.batch.column("observed"), -1, np.int64)
        return self._observed[0]

    @property
    def bulk(self) -> np.ndarray:
        """Which rows are bulk selections (computed on first use: a socket-layer batch's walk
        never asks)."""
        if self._bulk is None:
            self._bulk = self._bulk_rows()
        return self._bulk

    def _bulk_rows(self) -> np.ndarray:
        batch, n = self.batch, self.batch.num_rows
        if not self.bulk_enabled:
            return np.zeros(n, dtype=bool)
        events = batch.column("event")
        if pa.types.is_dictionary(events.type):
            names = events.dictionary.to_pylist()
            code = names.index(SELECT) if SELECT in names else -1
            bulk = events.indices.to_numpy(zero_copy_only=False) == code
        else:
            bulk = pc.equal(events, SELECT).fill_null(False).to_numpy(zero_copy_only=False)
        self.observed  # (reads the column and its validity)
        for valid in (*self._valid, self._observed[1]):  # type: ignore[index]
            if valid is not None:
                bulk &= valid
        for name in ("payload", "laddr", "lport", "raddr", "rport"):
            column = batch.column(name)
            if column.null_count != n:
                bulk &= column.is_null().to_numpy(zero_copy_only=False)
        cpu = self.cpu
        if len(cpu) and (cpu.min() < 0 or cpu.max() >= fast.CPU_LIMIT):
            bulk &= ((cpu >= 0) & (cpu < fast.CPU_LIMIT)) | ~self.cpu_valid
        return bulk

    @property
    def socket_events(self) -> bool:
        """Whether the batch holds a socket-layer arrival or observation (`stretch.KINDS`): a
        kernel-layer batch is told so without making its socket-layer view."""
        if self._socket_events is None:
            self._socket_events = any(name in KINDS for name in
                                      pc.unique(self.batch.column("event")).to_pylist())
        return self._socket_events

    def socket(self) -> SocketColumns:
        """The socket-layer view of the batch (`tracekit.replay.stretch`), built on first use."""
        if self._socket is None:
            self._socket = SocketColumns(self.batch, self._hash_valid, self.cpu, self.cpu_valid)
        return self._socket

    def event_names(self, a: int, b: int) -> tuple[list[str], np.ndarray]:
        """The event of rows `a:b`: (names, index of each row's name)."""
        events = self.batch.column("event").slice(a, b - a)
        if not pa.types.is_dictionary(events.type):
            events = pc.dictionary_encode(events)
        return events.dictionary.to_pylist(), events.indices.to_numpy(zero_copy_only=False)

    @property
    def seq(self) -> np.ndarray:
        if self._seq is None:
            self._seq = _values(self.batch.column("seq"), 0, np.int64)[0]
        return self._seq

    def dicts(self, rows: np.ndarray) -> list[dict[str, Any]]:
        """Rows `rows` (ascending) as dicts of Python values, one conversion per column."""
        return [dict(zip(COLUMNS, values)) for values in _values_of(self.batch, rows)]

    def rows_of(self, a: int, b: int) -> RowSource:
        """Rows `a:b` as dicts on demand, for a socket walk, which replays one by one mostly
        the rows that are neither arrivals nor observations (`SocketColumns.kind` 0), and
        `syn`s it cannot queue in bulk (not `decidable`): those rows of every host of the batch
        whose walk is a socket walk are converted together when the first walk asks for a row
        (`likely_rows`), any other row alone. (A wrong guess costs time, not results.)"""
        if self._likely is None:
            self._likely = self.likely_rows()
        return RowSource(self.batch.slice(a, b - a), self._likely, a)

    def likely_rows(self) -> dict[int, dict[str, Any]]:
        """The rows (by index in the batch) a socket walk likely replays one by one, as dicts,
        in the hosts with a socket-layer arrival or observation (the others' walks never ask)."""
        sc = self.socket()
        kind = sc.kind
        likely = (kind == 0) | ((kind == SYN) & ~sc.decidable)
        hosts = self.batch.column("host")
        if not pa.types.is_dictionary(hosts.type):
            hosts = pc.dictionary_encode(hosts)
        host = hosts.indices.to_numpy(zero_copy_only=False)
        starts = np.flatnonzero(np.r_[True, host[1:] != host[:-1]])
        socket_host = np.maximum.reduceat(kind > 0, starts) if len(kind) else np.zeros(0, bool)
        likely &= np.repeat(socket_host, np.diff(np.r_[starts, len(kind)]))
        rows = np.flatnonzero(likely)
        return dict(zip(rows.tolist(), _dicts_of(self.batch, rows)))

    def select_row(self, i: int) -> dict[str, Any]:
        """Bulk row `i` as the dict the per-row path reads."""
        return {"seq": int(self.seq[i]), "event": SELECT, "laddr": None, "lport": None,
                "raddr": None, "rport": None, "sk": int(self.sk[i]), "hash": int(self.hash[i]),
                "cpu": int(self.cpu[i]) if self.cpu_valid[i] else None,
                "observed": int(self.observed[i])}


class RowSource:
    """Rows of a range as the dicts the per-row path reads (`Columns.rows_of`): those in
    `rows` (made beforehand, by row index plus `offset`), any other row on its own."""

    def __init__(self, part: pa.RecordBatch, rows: dict[int, dict[str, Any]],
                 offset: int = 0) -> None:
        self.part = part
        self.rows = rows  # likely rows not yet asked for (shared by the walks of a batch)
        self.offset = offset
        self.columns: list[pa.Array] | None = None  # for the other rows

    def __getitem__(self, r: int) -> dict[str, Any]:
        # (each row is asked for once: the dict is the caller's)
        row = self.rows.pop(r + self.offset, None)
        if row is None:
            if self.columns is None:
                self.columns = [self.part.column(name) for name in COLUMNS]
            row = dict(zip(COLUMNS, [column[r].as_py() for column in self.columns]))
        return row


class Walk:
    """Rows `a:b` of a batch, all of one host."""

    def __init__(self, engine: Faithful, hs: HostState, cols: Columns, a: int, b: int,
                 number: int) -> None:
        self.engine, self.hs, self.cols, self.a, self.b = engine, hs, cols, a, b
        self.used: list[Snapshot] = []  # snapshots tagged in this walk, by index
        self.done = -1  # last row (relative) the per-row path handled
        self.number = number  # distinct per walk: marks the snapshots this walk tagged
        self.last_cpu: np.ndarray | None = None

    def run(self, open_end: bool = False) -> int:
        """Replay the rows; returns how many (from `a`) it replayed: all of them, but with
        `open_end` (the host's rows go on in the next batch) a socket-layer walk may leave the
        flows still open at the end to the next batch (`SocketWalk`)."""
        a, b, cols = self.a, self.b, self.cols
        if cols.bulk_enabled and cols.socket_events and cols.socket().kind[a:b].any():
            return SocketWalk(self.engine, self.hs, cols, a, b, open_end).run()
        self._selections()
        return b - a

    def _selections(self) -> None:
        a, b, cols = self.a, self.b, self.cols
        bulk = cols.bulk[a:b]
        specials = np.flatnonzero(~bulk)
        if len(specials) == b - a:
            for i, row in zip(range(a, b), cols.dicts(np.arange(a, b))):
                self.engine.row(self.hs, row, i)
            # (a snapshot's history mark does not see every change: one that renames its group
            # is recorded under the new name)
            self.hs.snapshots.clear()
            return
        sk = cols.sk[a:b]
        if len(specials):
            tagged = np.flatnonzero(bulk)  # relative rows of bulk selections
            segment = np.cumsum(~bulk)[tagged]  # special rows before each bulk row
            sk = sk[tagged]
        else:
            tagged, segment = None, None
        pair, pair_segment, pair_sk = _pairs(segment, sk, len(specials))
        cpu_valid = cols.cpu_valid[a:b]
        if len(specials) or not cpu_valid.all():
            self.last_cpu = np.maximum.accumulate(np.where(bulk & cpu_valid, np.arange(b - a), -1))
        cpu_missing: list[bool] | None = None
        if not cpu_valid.all():
            missing = ~(cpu_valid if tagged is None else cpu_valid[tagged])
            cpu_missing = (np.bincount(pair, weights=missing, minlength=len(pair_sk)) > 0).tolist()
        # Python lists in the loop below, which runs once per special row (NumPy's scalar
        # indexing costs more than the work of a row between two mutations)
        snapshot_of_pair: list[int] = []  # by pair, in order
        forced: np.ndarray | None = None
        bounds = np.searchsorted(pair_segment, np.arange(len(specials) + 2)).tolist()
        special_at = (specials + a).tolist()
        special_rows = cols.dicts(specials + a)
        pair_sks = pair_sk.tolist()
        for k in range(len(specials) + 1):
            programs: list[int] = []
            cpu_needed: list[int] = []
            for p in range(bounds[k], bounds[k + 1]):
                snap = self._snapshot(pair_sks[p])
                snapshot_of_pair.append(snap.index)
                if snap.forced:
                    programs.append(p)
                elif cpu_missing is not None and cpu_missing[p] and snap.state is not None \
                        and snap.state.by_cpu:
                    cpu_needed.append(p)
            if programs or cpu_needed:
                if tagged is None:
                    tagged, segment = np.arange(b - a), np.zeros(b - a, dtype=np.int64)
                if forced is None:
                    forced = np.zeros(len(tagged), dtype=bool)
                self._one_by_one(k, segment, pair, tagged, programs, cpu_needed, forced)
            if k < len(specials):
                self._special(special_at[k], special_rows[k])
        self._sync_cpu(b - a)
        snap = np.array(snapshot_of_pair, dtype=np.int64)[pair]
        if forced is not None:
            tagged, snap = tagged[~forced], snap[~forced]
        self._decide(tagged, snap)

    # -- the walk ---------------------------------------------------------------------------------
    def _snapshot(self, sk_id: int) -> Snapshot:
        hs = self.hs
        s = hs.host.socks.get(sk_id)
        if s is None:
            s = hs.host.kernel_sock(sk_id)
        reuse = s.sk.sk_reuseport_cb
        key: Any = id(reuse) if reuse is not None else ("sk", sk_id)
        snap = hs.snapshots.get(key)
        if snap is None or snap.reuse is not reuse or snap.mark != hs.history.mark(snap.label):
            snap = hs.snapshots[key] = self.engine.snapshot(hs, s, reuse)
        elif snap.restate:
            snap = hs.snapshots[key] = snap.restated()
        if snap.walk != self.number:
            snap.walk = self.number
            snap.index = len(self.used)
            self.used.append(snap)
        return snap

    def _one_by_one(self, k: int, segment: np.ndarray, pair: np.ndarray, tagged: np.ndarray,
                    programs: list[int], cpu_needed: list[int], forced: np.ndarray) -> None:
        """The bulk rows of segment `k` that a program decides, or that lack the CPU their group's
        SO_INCOMING_CPU preferences need: one by one, in order."""
        lo, hi = np.searchsorted(segment, [k, k + 1])
        pairs = pair[lo:hi]
        mask = np.isin(pairs, programs)
        if cpu_needed:
            rows = tagged[lo:hi] + self.a
            mask |= np.isin(pairs, cpu_needed) & ~self.cols.cpu_valid[rows]
        forced[lo:hi] |= mask
        rows = tagged[lo:hi][mask] + self.a
        for i, row in zip(rows.tolist(), self.cols.dicts(rows)):
            self._one(i, row)

    def _special(self, i: int, row: dict[str, Any]) -> None:
        """A special row, and the snapshots it may have made stale."""
        event = row["event"]
        if event in KEEPS_GROUPS:
            self._one(i, row)
        elif event in RESTATES:
            self._one(i, row)
            snap = self.hs.snapshots.get(_group_key(self.hs.host.socks, row["sk"]))
            if snap is not None:
                snap.restate = True
        elif event in TOUCHES_OWN_GROUPS:
            socks, snapshots = self.hs.host.socks, self.hs.snapshots
            sk, sk2 = row["sk"], row["sk2"]
            before = _group_key(socks, sk)
            before2 = _group_key(socks, sk2) if sk2 is not None else None
            self._one(i, row)
            snapshots.pop(before, None)
            snapshots.pop(_group_key(socks, sk), None)
            if sk2 is not None:
                snapshots.pop(before2, None)
                snapshots.pop(_group_key(socks, sk2), None)
        else:
            self._one(i, row)
            self.hs.snapshots.clear()

    def _one(self, i: int, row: dict[str, Any]) -> None:
        self._sync_cpu(i - self.a)
        self.engine.row(self.hs, row, i)
        self.done = i - self.a

    def _sync_cpu(self, upto: int) -> None:
        """The CPU of the last bulk selection before row `upto` (relative), as its faithful
        replay would have left it in the namespace."""
        if upto <= 0:
            return
        if self.last_cpu is None:  # every row so far a bulk row with a CPU
            self.hs.host.net.cpu = int(self.cols.cpu[self.a + upto - 1])
            return
        j = int(self.last_cpu[upto - 1])
        if j > self.done:
            self.hs.host.net.cpu = int(self.cols.cpu[self.a + j])

    # -- all at once ------------------------------------------------------------------------------
    def _decide(self, rows: np.ndarray | None, snap: np.ndarray) -> None:
        """Bulk rows `rows` (relative; None: every row of the walk), row i selecting from
        snapshot `snap[i]`."""
        cols, a, b = self.cols, self.a, self.b
        if rows is None:
            picked = slice(a, b)
            rows = np.arange(a, b)
        else:
            picked = rows = rows + a
        if not len(rows):
            return
        cpus = cols.cpu[picked]  # 0 where the row has none: only groups the CPU does not decide
        tables = fast.tabulate([s.state for s in self.used], int(cpus.max()))
        expected, answer, start = tables.lookup(snap, cols.hash[picked], cpus)
        match = expected == cols.observed[picked]
        if match.all():
            self._matches(rows, snap, answer, start, tables)
            return
        wrong = np.flatnonzero(~match)
        if len(wrong) < len(rows):
            self._matches(rows[match], snap[match], answer[match], start[match], tables)
        for i, g in zip(rows[wrong].tolist(), snap[wrong].tolist()):
            self.engine.late_select(self.hs, self.used[g], cols.select_row(i), i)

    def _matches(self, rows: np.ndarray, snap: np.ndarray, answer: np.ndarray,
                 start: np.ndarray, tables: fast.BatchTables) -> None:
        sink, host, used = self.engine.sink, self.hs.name, self.used
        stride = tables.width + 1
        per_answer = np.bincount(answer, minlength=len(used) * stride)
        counts = per_answer.reshape(len(used), stride).sum(axis=1)
        last = np.full(len(used), -1, dtype=np.int64)
        np.maximum.at(last, snap, rows)
        for label, total, touches in _touches(used, counts, last):
            for n, g in enumerate(touches):
                s = used[g]
                sink.add_matches(host, label, _rid(s), s.reuse, total if n == 0 else 0,
                                 int(last[g]))
        labels: dict[str, int] = {}
        label_of = np.array([labels.setdefault(s.label, len(labels)) for s in used], dtype=np.int64)
        names = list(labels)
        for label, sk, count in _load(label_of, tables.ids, per_answer, stride):
            sink.add_load(host, names[label], sk, count)
        if sink.results is not None:
            slot = answer - snap * stride
            reason = np.where(tables.by_cpu[snap], 2,
                              np.where((slot != start) & (slot < tables.width), 1, 0))
            sink.add_rows(rows, self._results(rows, snap, tables.ids[answer], reason, names,
                                              label_of))

    def _results(self, rows: np.ndarray, snap: np.ndarray, expected: np.ndarray,
                 reason: np.ndarray, names: list[str], label_of: np.ndarray) -> pa.RecordBatch:
        n = len(rows)
        rids = np.array([_rid(s) if _rid(s) is not None else -1 for s in self.used], np.int64)
        rid = rids[snap]
        nulls_s, nulls_i = pa.nulls(n, pa.string()), pa.nulls(n, pa.int32())
        expected_array = pa.array(expected, pa.int64())
        return pa.RecordBatch.from_arrays([
            repeated(self.hs.name, n), pa.array(self.cols.seq[rows], pa.int64()),
            repeated(SELECT, n),
            nulls_s, nulls_i, nulls_s, nulls_i, pa.array(self.cols.sk[rows], pa.int64()),
            decoded(label_of[snap], pa.array(names, pa.string())),
            pa.array(rid, pa.int64(), mask=rid < 0), expected_array, expected_array,
            repeated("match", n), decoded(reason, REASONS), nulls_s,
        ], schema=DECISION_SCHEMA)


# what a special row can change of the groups bulk rows read: nothing (`has_conns`, which
# `reuseport_has_conns_set` sets, is read by the UDP lookup, not by `reuseport_select_sock`); the
# state of its `sk` in its group (`GroupState`), not its membership, label, program or history
# (`Snapshot.restated`); the groups of its `sk` and `sk2` (kernel-layer calls and socket options
# act on those alone); anything (socket-layer events)
KEEPS_GROUPS = {SELECT, "reuseport_migrate_sock", "sysctl", "reuseport_has_conns_set"}
RESTATES = {"sk_state", "reuseport_update_incoming_cpu"}
TOUCHES_OWN_GROUPS = {"setsockopt", "reuseport_alloc", "reuseport_add_sock",
                      "reuseport_detach_sock", "reuseport_stop_listen_sock",
                      "reuseport_attach_prog", "reuseport_detach_prog"}


def _group_key(socks: dict[int, Any], sk_id: int | None) -> Any:
    """The `HostState.snapshots` key of the group socket `sk_id` is in (of the host's `socks`)."""
    if sk_id is None:
        return None
    s = socks.get(sk_id)
    reuse = s.sk.sk_reuseport_cb if s is not None else None
    return id(reuse) if reuse is not None else ("sk", sk_id)


def _rid(snap: Snapshot) -> int | None:
    if snap.state is None or snap.state.reuseport_id < 0:
        return None
    return snap.state.reuseport_id


def _touches(used: list[Snapshot], counts: np.ndarray,
             last: np.ndarray) -> list[tuple[str, int, list[int]]]:
    """Per group label (in order of first use): the matches on all its snapshots, and the few
    snapshots whose touch decides what the sink keeps for the label (its reuseport id and group
    are those of the latest touch naming one): the latest naming an id, the latest naming a
    group, or else the latest. Earlier touches would be overwritten within the batch anyway."""
    labels: dict[str, list] = {}  # label -> [total, latest with id, latest with group, latest]
    for g in np.flatnonzero(counts).tolist():
        s = used[g]
        entry = labels.get(s.label)
        if entry is None:
            entry = labels[s.label] = [0, -1, -1, -1]
        entry[0] += int(counts[g])
        row = last[g]
        if _rid(s) is not None and (entry[1] < 0 or row > last[entry[1]]):
            entry[1] = g
        if s.reuse is not None and (entry[2] < 0 or row > last[entry[2]]):
            entry[2] = g
        if entry[3] < 0 or row > last[entry[3]]:
            entry[3] = g
    out = []
    for label, (total, with_id, with_group, latest) in labels.items():
        touches = sorted({g for g in (with_id, with_group) if g >= 0} or {latest},
                         key=lambda g: last[g])
        out.append((label, total, touches))
    return out


def _pairs(segment: np.ndarray | None, sk: np.ndarray,
           specials: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The distinct (segment, socket) pairs of the bulk rows, ordered by segment then socket:
    `(pair of each row, segment of each pair, socket of each pair)`. `segment` None: all 0."""
    lo, hi = int(sk.min()), int(sk.max())
    if segment is None and lo >= 0 and hi < _DENSE:
        present = np.bincount(sk) > 0
        keys = np.flatnonzero(present)
        return (np.cumsum(present) - 1)[sk], np.zeros(len(keys), dtype=np.int64), keys
    if segment is None:
        segment = np.zeros(len(sk), dtype=np.int64)
    if hi - lo < _DENSE:  # the distinct sockets, ascending, without sorting
        present = np.bincount(sk - lo) > 0
        socks = np.flatnonzero(present) + lo
        code = (np.cumsum(present) - 1)[sk - lo]
    else:
        socks, code = np.unique(sk, return_inverse=True)
    width = len(socks)
    key = segment * width + code
    if (specials + 1) * width <= _DENSE:
        present = np.bincount(key, minlength=(specials + 1) * width) > 0
        keys = np.flatnonzero(present)
        pair = (np.cumsum(present) - 1)[key]
    else:
        keys, pair = np.unique(key, return_inverse=True)
    return pair, keys // width, socks[keys % width]


def _load(label_of: np.ndarray, ids: np.ndarray, per_answer: np.ndarray,
          stride: int) -> list[tuple[int, int, int]]:
    """(label, sk, count) of the matched decisions expected on a socket, from the count of each
    answer (`BatchTables.ids` index)."""
    answers = np.flatnonzero(per_answer)
    sks = ids[answers]
    chosen = sks >= 0
    answers, sks = answers[chosen], sks[chosen]
    labels = label_of[answers // stride]
    counts = per_answer[answers]
    if not len(answers):
        return []
    width = int(sks.max()) + 1
    keys, inverse = np.unique(labels * width + sks, return_inverse=True)
    totals = np.bincount(inverse, weights=counts, minlength=len(keys)).astype(np.int64)
    return list(zip((keys // width).tolist(), (keys % width).tolist(), totals.tolist()))


def _values_of(batch: pa.RecordBatch, rows: np.ndarray) -> list[tuple]:
    """Rows `rows` (ascending) of `batch` as tuples of Python values (`COLUMNS`), one
    conversion per column."""
    if not len(rows):
        return []
    first, count = int(rows[0]), len(rows)
    if int(rows[-1]) - first + 1 == count:
        part = batch.slice(first, count)
    else:
        part = batch.take(pa.array(rows))
    nothing = [None] * count
    return list(zip(*[nothing if (column := part.column(name)).null_count == count
                      else _pylist(column) for name in COLUMNS]))


_NO_VALUES = dict.fromkeys(COLUMNS)
FEW_ROWS = 256
"""Fewer rows than this `_dicts_of` makes as `dict(zip(COLUMNS, values))` of `_values_of`."""


def _dicts_of(batch: pa.RecordBatch, rows: np.ndarray) -> list[dict[str, Any]]:
    """Rows `rows` (ascending) of `batch` as dicts of Python values (`COLUMNS`, in order): what
    `dict(zip(COLUMNS, values))` makes of `_values_of`, made column by column and only where a
    value is not null (a group change fills a few of the columns)."""
    count = len(rows)
    if count < FEW_ROWS:  # (few rows: fewer pyarrow calls, which cost more here than dicts)
        return [dict(zip(COLUMNS, values)) for values in _values_of(batch, rows)]
    first = int(rows[0])
    if int(rows[-1]) - first + 1 == count:
        part = batch.slice(first, count)
    else:
        part = batch.take(pa.array(rows))
    copy = _NO_VALUES.copy
    dicts = [copy() for _ in range(count)]
    for name in COLUMNS:
        column = part.column(name)
        nulls = column.null_count
        if nulls == count:
            continue
        if nulls:
            valid = column.is_valid().to_numpy(zero_copy_only=False).tolist()
            into = list(compress(dicts, valid))
            column = column.drop_null()
        else:
            into = dicts
        any(map(setitem, into, repeat(name), _pylist(column)))  # (setitem gives None: all run)
    return dicts


def _pylist(column: pa.Array) -> list[Any]:
    """`column.to_pylist()`; a dictionary column decoded through its dictionary, which is many
    times faster than pyarrow's value-by-value conversion of dictionary scalars (and, for
    fewer values than the dictionary has, through the values it uses)."""
    if not pa.types.is_dictionary(column.type):
        return column.to_pylist()
    if len(column) < len(column.dictionary):
        return column.dictionary.take(column.indices).to_pylist()
    values = np.array(column.dictionary.to_pylist() + [None], dtype=object)
    indices = column.indices.fill_null(len(values) - 1).to_numpy(zero_copy_only=False)
    return values[indices].tolist()


def _values(column: pa.Array, fill: int, dtype) -> tuple[np.ndarray, np.ndarray | None]:
    """The column as NumPy (nulls as `fill`) and its validity (None: no nulls)."""
    if column.null_count == 0:
        return column.to_numpy(zero_copy_only=False).astype(dtype, copy=False), None
    valid = column.is_valid().to_numpy(zero_copy_only=False)
    return pc.fill_null(column, fill).to_numpy(zero_copy_only=False).astype(dtype, copy=False), valid


