"""Bulk selection: a run of `reuseport_select_sock` calls over a group that does not change.

Between group changes the answer of `reuseport_select_sock_by_hash` depends only on the start slot
`reciprocal_scale(hash, num_socks)`, and with SO_INCOMING_CPU on the CPU as well. So a run of
selections is: tabulate the faithful scan once per start slot (and per CPU that some live socket
prefers), then index the table with NumPy. The answers are exactly the faithful path's; wherever
the bulk path cannot decide (a program is attached) it answers `FAITHFUL` and the caller replays
those rows one by one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import chain

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tracekit.kernel.net import Net
from tracekit.kernel.profiles import Profile
from tracekit.kernel.sock import TCP_ESTABLISHED, Sock, sock_net
from tracekit.kernel.sock_reuseport import SockReuseport

__all__ = ["BatchTables", "FAITHFUL", "GroupState", "NO_SOCKET", "select_many", "select_run",
           "select_segment", "slot_tables", "tabulate"]

FAITHFUL = -2
"""The bulk path cannot decide this row: call `reuseport_select_sock` for it."""

NO_SOCKET = -1
"""The selection returns NULL."""

_LOOKUP_LIMIT = 1 << 16
_FEW_GROUPS = 16


def select_run(reuse: SockReuseport, hashes: np.ndarray,
               cpus: np.ndarray | None = None) -> np.ndarray:
    """The sk id `reuseport_select_sock` returns for each (hash, cpu) over the unchanged `reuse`.

    `hashes` are the u32 flow hashes, `cpus` the CPU running each selection (None: the CPU the
    group's network namespace holds now). Returns int64: an sk id, `NO_SOCKET`, or `FAITHFUL` for
    every row when a program is attached (the program, not the hash, decides).
    """
    hashes = np.asarray(hashes)
    if reuse.prog is not None:
        return np.full(len(hashes), FAITHFUL, dtype=np.int64)
    if reuse.num_socks == 0:
        return np.full(len(hashes), NO_SOCKET, dtype=np.int64)
    start = _reciprocal_scale(hashes, reuse.num_socks)
    cpu_values, tables = slot_tables(reuse)
    if len(cpu_values) == 0:
        return tables[0][start]
    if cpus is None:
        first: Sock = reuse.socks[0]  # type: ignore[assignment]
        cpus = np.full(len(hashes), sock_net(first).cpu, dtype=np.int64)
    rows = _table_rows(cpu_values, np.asarray(cpus))
    return tables.ravel()[rows * reuse.num_socks + start]


def select_many(groups: Sequence[SockReuseport | None], group_index: np.ndarray,
                hashes: np.ndarray, cpus: np.ndarray | None = None) -> np.ndarray:
    """`select_run` for rows that interleave several unchanged groups.

    Row i selects from `groups[group_index[i]]`; a None group (the socket has no
    `sk_reuseport_cb`) answers `NO_SOCKET`, as `reuseport_select_sock` does.
    """
    group_index = np.asarray(group_index)
    hashes = np.asarray(hashes)
    if len(groups) == 1:
        return _select_or_none(groups[0], hashes, cpus)
    out = np.empty(len(hashes), dtype=np.int64)
    for g, rows in enumerate(_rows_by_group(group_index, len(groups))):
        if len(rows):
            out[rows] = _select_or_none(groups[g], hashes[rows],
                                        None if cpus is None else cpus[rows])
    return out


def select_segment(resolve: Callable[[int], SockReuseport | None], sk: np.ndarray,
                   hashes: np.ndarray, cpus: np.ndarray | None = None,
                   ) -> tuple[np.ndarray, np.ndarray, list[SockReuseport | None]]:
    """Selections between two group changes, each row naming its group by the socket `sk` the
    caller passed (`resolve(sk)` gives that socket's `sk_reuseport_cb`).

    Returns `(expected, group_index, groups)`: the `select_run` answer of every row, and which of
    `groups` (distinct groups, in order of first appearance) each row selected from.
    """
    encoded = pc.dictionary_encode(pa.array(np.asarray(sk, dtype=np.int64)))
    groups: list[SockReuseport | None] = []
    slot_of: dict[int, int] = {}
    of_socket = np.empty(len(encoded.dictionary), dtype=np.int64)
    for i, sk_id in enumerate(encoded.dictionary.to_pylist()):
        reuse = resolve(sk_id)
        key = id(reuse)
        if key not in slot_of:
            slot_of[key] = len(groups)
            groups.append(reuse)
        of_socket[i] = slot_of[key]
    group_index = of_socket[encoded.indices.to_numpy()]
    return select_many(groups, group_index, hashes, cpus), group_index, groups


def _select_or_none(reuse: SockReuseport | None, hashes: np.ndarray,
                    cpus: np.ndarray | None) -> np.ndarray:
    if reuse is None:
        return np.full(len(hashes), NO_SOCKET, dtype=np.int64)
    return select_run(reuse, hashes, cpus)


def _rows_by_group(group_index: np.ndarray, n_groups: int) -> list[np.ndarray]:
    """The rows of each group: a pass per group when they are few, else one stable sort."""
    if n_groups <= _FEW_GROUPS:
        return [np.flatnonzero(group_index == g) for g in range(n_groups)]
    order = np.argsort(group_index, kind="stable")
    bounds = np.searchsorted(group_index[order], np.arange(n_groups + 1))
    return [order[lo:hi] for lo, hi in zip(bounds[:-1], bounds[1:])]


def slot_tables(reuse: SockReuseport) -> tuple[np.ndarray, np.ndarray]:
    """The faithful scan's answer for every start slot.

    Returns `(cpu_values, tables)`: `tables[0]` answers a CPU that no live socket prefers (or every
    CPU when the profile or the group ignores SO_INCOMING_CPU), `tables[k + 1]` answers
    `cpu_values[k]` (sorted). Memoized on what the scan reads, so an unchanged group costs one
    pass over its members.
    """
    live: list[Sock] = reuse.live()
    by_cpu = bool(reuse.incoming_cpu) and sock_net(live[0]).profile.incoming_cpu
    if by_cpu:
        members = tuple((sk.sk_id, sk.sk_state != TCP_ESTABLISHED, sk.sk_incoming_cpu)
                        for sk in live)
    else:
        members = tuple((sk.sk_id, sk.sk_state != TCP_ESTABLISHED, -1) for sk in live)
    return _tables(members, by_cpu)


@lru_cache(maxsize=4096)
def _tables(members: tuple[tuple[int, bool, int], ...],
            by_cpu: bool) -> tuple[np.ndarray, np.ndarray]:
    columns = np.array(members, dtype=np.int64).reshape(-1, 3)
    ids, valid, preferred = columns[:, 0], columns[:, 1].astype(bool), columns[:, 2]
    cpu_values = np.unique(preferred[valid]) if by_cpu else np.empty(0, dtype=np.int64)
    candidates = np.vstack([valid, valid & (preferred == cpu_values[:, np.newaxis])])
    tables = _first_from(candidates, ids)
    tables.flags.writeable = False
    cpu_values.flags.writeable = False
    return cpu_values, tables


def _reciprocal_scale(hashes: np.ndarray, num_socks: int) -> np.ndarray:
    """`reciprocal_scale()` of u32 hashes, as int64 slots."""
    wide = hashes.astype(np.uint64)
    if hashes.dtype != np.uint32:
        wide &= np.uint64(0xFFFFFFFF)
    return ((wide * np.uint64(num_socks)) >> np.uint64(32)).view(np.int64)


def _first_from(candidates: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Row by row: for each start slot, the id of the first candidate at or after it, wrapping
    around (`NO_SOCKET` when a row has none). Scans the row twice over, right to left."""
    n = candidates.shape[1]
    position = np.where(np.hstack([candidates, candidates]), np.arange(2 * n), 2 * n)
    nearest = np.minimum.accumulate(position[:, ::-1], axis=1)[:, ::-1][:, :n]
    slot = np.where(nearest < 2 * n, nearest % n, n)
    return np.append(ids, NO_SOCKET)[slot]


def _table_rows(cpu_values: np.ndarray, cpus: np.ndarray) -> np.ndarray:
    """Row of `slot_tables` for each CPU: 0 unless a live socket prefers that CPU."""
    if len(cpus) and 0 <= cpus.min() and cpus.max() < _LOOKUP_LIMIT:
        lookup = np.zeros(int(cpus.max()) + 1, dtype=np.int64)
        listed = (cpu_values >= 0) & (cpu_values < len(lookup))
        lookup[cpu_values[listed]] = np.flatnonzero(listed) + 1
        return lookup[cpus]
    k = np.searchsorted(cpu_values, cpus)
    clipped = np.minimum(k, len(cpu_values) - 1)
    return np.where(cpu_values[clipped] == cpus, clipped + 1, 0)


# -- snapshots: many groups, many states, one batch ---------------------------------------------

CPU_LIMIT = 1024
"""Selections on a CPU at or past this (or negative) go row by row: the per-CPU lookup is dense."""


@dataclass(frozen=True)
class GroupState:
    """What hash selection reads of one group at one moment: its live members in array order
    (sk id, `sk_state`, `sk_incoming_cpu`), the `incoming_cpu` count and the profile."""

    reuseport_id: int
    members: tuple[tuple[int, int, int], ...]
    incoming_cpu: int
    profile: Profile

    @classmethod
    def of(cls, reuse: SockReuseport) -> GroupState:
        # (a comprehension: twice as fast as a three-attribute attrgetter)
        members = tuple([(s.sk_id, s.sk_state, s.sk_incoming_cpu)  # type: ignore[union-attr]
                         for s in reuse.socks[:reuse.num_socks]])
        first = reuse.socks[0]
        # (the fields set without the frozen `__init__`'s four `object.__setattr__` calls,
        # which cost more than reading the members: a snapshot per group change is made)
        state = object.__new__(cls)
        state.__dict__.update(reuseport_id=reuse.reuseport_id, members=members,
                              incoming_cpu=reuse.incoming_cpu,
                              profile=first.sk_net.profile if first is not None else None)
        return state

    @property
    def by_cpu(self) -> bool:
        """SO_INCOMING_CPU preferences decide (`_cpu_matters`)."""
        return bool(self.members and self.profile.incoming_cpu and self.incoming_cpu)

    def slot_tables(self) -> tuple[np.ndarray, np.ndarray]:
        """`slot_tables` of the group in this state."""
        if self.by_cpu:
            members = tuple([(sk_id, state != TCP_ESTABLISHED, cpu)
                             for sk_id, state, cpu in self.members])
        else:
            members = tuple([(sk_id, state != TCP_ESTABLISHED, -1)
                             for sk_id, state, _cpu in self.members])
        return _tables(members, self.by_cpu)

    def replica(self, sk_id: int, cpu: int | None) -> Sock:
        """A socket `sk_id` selecting from a copy of the group, on `cpu`: the faithful functions
        called on it answer what they answered on the group at that moment."""
        net = Net(profile=self.profile, cpu=0 if cpu is None else int(cpu))
        socks: list[Sock | None] = [Sock(sk_id=i, sk_net=net, sk_state=state, sk_incoming_cpu=c)
                                    for i, state, c in self.members]
        reuse = SockReuseport(max_socks=max(len(socks), 1), num_socks=len(socks),
                              incoming_cpu=self.incoming_cpu, reuseport_id=self.reuseport_id,
                              socks=socks or [None])
        return Sock(sk_id=sk_id, sk_net=net, sk_reuseport_cb=reuse)


@dataclass(frozen=True)
class BatchTables:
    """The faithful scan's answer for every (group state, CPU, start slot), padded to the widest
    group: `slots[row * width + start]` is the chosen slot (`width`: none) and
    `ids[g * (width + 1) + slot]` its sk id (`NO_SOCKET` for none), where `row` is `g` unless
    the CPU decides (`cpu_rows[g, cpu]`)."""

    num_socks: np.ndarray
    width: int
    slots: np.ndarray
    ids: np.ndarray
    by_cpu: np.ndarray
    cpu_rows: np.ndarray | None

    def lookup(self, group: np.ndarray, hashes: np.ndarray,
               cpus: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`(expected, answer, start)` of each row: row i selects from state `group[i]` on CPU
        `cpus[i]`; `answer` indexes `ids` (`group * (width + 1) + slot`)."""
        start = hashes.astype(np.uint64)
        start *= self.num_socks.astype(np.uint64)[group]
        start >>= np.uint64(32)
        start = start.view(np.int64)
        if self.cpu_rows is None:
            at = group * self.width
        else:
            columns = self.cpu_rows.shape[1]
            at = (self.cpu_rows.ravel() * self.width)[group * columns + cpus]
        at += start
        answer = self.slots[at]
        at = np.multiply(group, self.width + 1, out=at)
        answer += at
        return self.ids[answer], answer, start


def tabulate(states: Sequence[GroupState | None], max_cpu: int) -> BatchTables:
    """`BatchTables` of `states` (None: a socket outside any group, which selects nothing), for
    CPUs 0..`max_cpu`. One vectorized scan over every state at once."""
    count = len(states)
    sizes = [len(s.members) if s is not None else 0 for s in states]
    n = np.array(sizes, dtype=np.int64)
    width = max(1, max(sizes, default=1))
    flat = np.fromiter(chain.from_iterable(chain.from_iterable(s.members for s in states
                                                               if s is not None)),
                       dtype=np.int64).reshape(-1, 3)
    owner = np.repeat(np.arange(count), n)
    position = np.arange(len(flat)) - np.repeat(np.cumsum(n) - n, n)
    ids = np.full((count, width + 1), NO_SOCKET, dtype=np.int64)
    ids[owner, position] = flat[:, 0]
    valid = np.zeros((count, width), dtype=bool)
    valid[owner, position] = flat[:, 1] != TCP_ESTABLISHED
    by_cpu = np.array([s is not None and s.by_cpu for s in states], dtype=bool)
    rows, row_n, cpu_rows = valid, n, None
    if by_cpu.any():
        preferred = np.full((count, width), -2, dtype=np.int64)
        preferred[owner, position] = flat[:, 2]
        wanted = by_cpu[owner] & (flat[:, 1] != TCP_ESTABLISHED) & (flat[:, 2] >= 0) \
            & (flat[:, 2] <= max_cpu)
        pairs = np.unique(owner[wanted] * (max_cpu + 1) + flat[wanted, 2])
        group, cpu = pairs // (max_cpu + 1), pairs % (max_cpu + 1)
        rows = np.vstack([valid, valid[group] & (preferred[group] == cpu[:, np.newaxis])])
        row_n = np.concatenate([n, n[group]])
        cpu_rows = np.repeat(np.arange(count)[:, np.newaxis], max_cpu + 1, axis=1)
        cpu_rows[group, cpu] = count + np.arange(len(pairs))
    slots = _first_slots(rows, np.maximum(row_n, 1), width)
    return BatchTables(n, width, slots.ravel(), ids.ravel(), by_cpu, cpu_rows)


def _first_slots(candidates: np.ndarray, n: np.ndarray, width: int) -> np.ndarray:
    """For each row (a group of `n[r]` slots) and start slot: the first candidate slot at or after
    the start, wrapping around at `n[r]`; `width` when the row has none."""
    if not len(candidates):
        return np.zeros((0, width), dtype=np.int64)
    doubled = np.arange(2 * width)
    source = doubled[np.newaxis, :] % n[:, np.newaxis]
    inside = doubled[np.newaxis, :] < 2 * n[:, np.newaxis]
    hit = np.take_along_axis(candidates, source, axis=1) & inside
    position = np.where(hit, doubled, 2 * width)
    nearest = np.minimum.accumulate(position[:, ::-1], axis=1)[:, ::-1][:, :width]
    return np.where(nearest < 2 * width, nearest % n[:, np.newaxis], width)
