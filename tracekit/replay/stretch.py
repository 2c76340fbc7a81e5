"""Socket-layer rows in bulk: between two group changes an arrival's socket depends only on its
hash (and CPU), so most `syn`/`datagram` rows and their `accept`/`recv` are decided at once.

One host's rows of one batch are split into

- *closed flows*: every row of the flow (a TCP 4-tuple: one `syn` then one `accept`; a UDP
  4-tuple: datagrams and as many `recv`s, none before its datagram) lies between the same two
  route changes, the host holds nothing of the flow when the walk starts, every arrival has a
  hash and a CPU and its destination is decided by one group's hash alone (`Host.hash_route`).
  Such a flow leaves nothing behind in the model, so it needs no model at all: after the walk its
  arrivals are decided together (`fast.tabulate`) and, where every arrival of the flow went to
  the one socket every observation names, with the same reason, its observations are matches
  whichever arrival each pairs with. That is why this module never pairs: a flow it cannot
  settle so goes through `Host`'s own pairing (`accept`, `recv`), the one place pairing lives.
- everything else, replayed in row order during the walk: other rows through the engine's
  faithful path (`Faithful.row`), except arrivals whose destination a hash decides, which are
  decided here and queued with `Host.queue_syn` / `Host.queue_datagram` (what `syn` and
  `datagram` do after their lookup) with the same `Pick` the lookup would have built.

A closed flow whose verdicts are not all matches is replayed after the walk, row by row through
the host's pairing, with the picks of its arrivals as they were then and the group history of
that moment. Routes are resolved when the walk enters the stretch after a route change
(`ROUTE_KEEPING` lists the events that cannot change one).

Flows are numbered by hashing their 5-tuple keys (`Flows`), and a walk whose host goes on in the
next batch stops where no flow is left open (`SocketWalk._cut`): the engine replays the rest
with the next batch, so traffic that drains its sockets every few hundred arrivals does not
leave a flow at each batch boundary to the per-row path.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass
from functools import cached_property, lru_cache
from operator import itemgetter
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from tracekit.kernel import cbpf
from tracekit.kernel.packet import loopback_skb
from tracekit.kernel.sock import IPPROTO_TCP, IPPROTO_UDP, TCP_ESTABLISHED
from tracekit.kernel.socket_layer.addresses import normal_ip, parse_ip
from tracekit.kernel.socket_layer.host import Flow, Host, Socket
from tracekit.kernel.socket_layer.selection import Pick, prog_label, replace_pick
from tracekit.kernel.sock_reuseport import SockReuseport
from tracekit.replay import fast, ports
from tracekit.replay.decision import DECISION_SCHEMA, decoded, repeated
from tracekit.replay.history import HistoryView
from tracekit.replay.state import Faithful, HostState
from tracekit.trace.checks import is_ip_text

__all__ = ["ROUTE_KEEPING", "SocketColumns", "SocketWalk"]

_new = object.__new__

SYN, ACCEPT, RESET, DATAGRAM, RECV = 1, 2, 3, 4, 5
KINDS = {"syn": SYN, "accept": ACCEPT, "reset": RESET, "datagram": DATAGRAM, "recv": RECV}
ARRIVAL_EVENT = {SYN: "syn", DATAGRAM: "datagram"}
OBSERVATION_EVENT = {ACCEPT: "accept", RECV: "recv", RESET: "reset"}
ROUTE_KEEPING = frozenset({"socket", "sysctl", "syn", "datagram", "accept", "recv", "reset",
                           "reuseport_select_sock", "reuseport_migrate_sock"})
"""Events after which every destination still reaches the socket it reached before: they open
an unbound socket, change only what migration reads, or move connections and datagrams."""
REASONS = ("hash", "established-skip", "incoming-cpu")
FEW = 32
"""Closed arrivals of an epoch tagged one by one rather than with NumPy."""
PORTS = 65536
WIDE = 1 << 15
"""Addresses in a batch past which flow keys number the (protocol, laddr, lport) first."""
DENSE = 1 << 18
"""Destination keys spanning at most this are numbered by counting rather than hashing."""
HOLD = 8192
"""Rows at most that a walk with an open end leaves to the next batch (`SocketWalk._cut`)."""
ROUTE_CACHE = 1024
CLASSIC_ANSWERS = 1 << 14
"""Answers a host keeps per classic program (`ClassicAnswers`) before it forgets them all."""
"""Routes a host keeps for reuse across stretches (`HostState.routes`)."""
PORT_KEEPING = frozenset({"syn", "datagram", "accept", "recv", "reset", "sysctl"})
"""Rows after which every route and port memo (`tracekit.replay.ports`) still holds: they
change no socket, group or bucket a lookup reads (a datagram's delivery changes a connected
socket's `sk_incoming_cpu`, which memos read live; `sysctl` only what migration reads)."""
SOCKET_ROWS = frozenset({"socket", "bind", "listen", "setsockopt", "connect", "shutdown", "close"})
"""Rows of one socket (`sk`) after which a port memo still holds unless that socket was or is on
the memo's port (its `lport` before or after), or is one whose state the memo read (`PortMemo.ids`:
the port's sockets, its groups' members; a `socket` row reusing an id replaces the host's socket
of that id, which labels a pick), or the row made the host's labels come from binds (`Host.bound`,
`Host.labelled`). Each changes only its socket, the socket's group, whose members share its port,
and the buckets of its port (a stopping listener's migrations move TCP connections only)."""
_UNSEEN = -2  # (`SocketWalk._route`: a destination not yet resolved in this epoch)
_HASH_PICK = Pick(sk=-1, reason="hash")  # (what `Route.base` is made from)


class SocketColumns:
    """What the socket walk reads of one batch, as NumPy: event kinds, flows with their
    addresses in one spelling (`normal_ip`), hashes and CPUs."""

    def __init__(self, batch: pa.RecordBatch, hash_valid: np.ndarray | None,
                 cpu: np.ndarray, cpu_valid: np.ndarray) -> None:
        n = batch.num_rows
        events = batch.column("event")
        if not pa.types.is_dictionary(events.type):
            events = pc.dictionary_encode(events)
        code = np.array([KINDS.get(name, 0) for name in events.dictionary.to_pylist()] + [0],
                        dtype=np.int8)
        kind = code[events.indices.fill_null(len(code) - 1).to_numpy(zero_copy_only=False)]
        self.addresses: list[str] = []
        self.address_code: dict[str, int] = {}
        self.spelled: dict[str, tuple[list, np.ndarray]] = {}  # the trace's own text, per column
        self.laddr = self._addresses(batch.column("laddr"), "laddr")
        self.raddr = self._addresses(batch.column("raddr"), "raddr")
        self.lport = _ints(batch.column("lport"))
        self.rport = _ints(batch.column("rport"))
        has_flow = (self.laddr >= 0) & (self.raddr >= 0) & (self.lport >= 0) & (self.rport >= 0) \
            & (self.lport < PORTS) & (self.rport < PORTS)
        # a row without a column its event requires goes to the per-row path, which refuses it
        arrival = (kind == SYN) | (kind == DATAGRAM)
        # (a `reset` names no socket)
        has_flow &= np.where(arrival, _valid(batch.column("proto")),
                             _valid(batch.column("sk")) | (kind == RESET))
        self.kind = np.where(has_flow, kind, 0).astype(np.int8)
        decidable = cpu_valid if hash_valid is None else hash_valid & cpu_valid
        self.hash_valid = np.ones(n, dtype=bool) if hash_valid is None else hash_valid
        self.cpu_known = cpu_valid & (cpu >= 0) & (cpu < fast.CPU_LIMIT)
        self.decidable = decidable & (cpu >= 0) & (cpu < fast.CPU_LIMIT)
        self.batch = batch
        self._sk_hash: list | None = None
        self._payload: list | None = None
        self._locals: np.ndarray | None = None

    def sk_hash(self, i: int) -> int | None:
        if self._sk_hash is None:
            self._sk_hash = self.batch.column("sk_hash").to_pylist()
        return self._sk_hash[i]

    def payload(self, i: int) -> bytes | None:
        if self._payload is None:
            self._payload = self.batch.column("payload").to_pylist()
        return self._payload[i]

    def texts(self, name: str, a: int, b: int) -> list[str | None]:
        """Rows `a:b` of `laddr` or `raddr` as the trace spells them."""
        spelled = self.spelled.get(name)
        if spelled is None:
            return [None] * (b - a)
        names, indices = spelled
        return [names[j] for j in indices[a:b].tolist()]

    def _addresses(self, column: pa.Array, name: str) -> np.ndarray:
        """Codes of the column's addresses (-1: null), equal for two spellings of one address."""
        if column.null_count == len(column):
            return np.full(len(column), -1, dtype=np.int64)
        if not pa.types.is_dictionary(column.type):
            column = pc.dictionary_encode(column)
        indices = column.indices.fill_null(len(column.dictionary)).to_numpy(zero_copy_only=False)
        texts, spellings = _spellings(name, column.dictionary)
        self.spelled[name] = (texts, indices)
        codes = self.address_code  # an address's code: its position in `addresses`
        remap = [-1 if spelled is None else codes.setdefault(spelled, len(codes))
                 for spelled in spellings]
        self.addresses = list(codes)
        lookup = np.array(remap + [-1], dtype=np.int64)
        return lookup[indices]

    def flow_keys(self, a: int, b: int) -> np.ndarray:
        """One int64 per row of `a:b` naming (TCP or UDP, laddr, lport, raddr, rport) (rows
        without a flow: any value)."""
        udp = (self.kind[a:b] >= DATAGRAM).astype(np.int64)
        width = max(1, len(self.addresses))
        if width > WIDE:
            return self._key(udp, self.laddr[a:b], self.lport[a:b], self.raddr[a:b],
                             self.rport[a:b])
        key = udp  # as `_key`, in place
        key *= width
        key += self.laddr[a:b]
        key *= PORTS
        key += self.lport[a:b]
        key *= width * PORTS
        remote = self.raddr[a:b] * PORTS
        remote += self.rport[a:b]
        key += remote
        return key

    def key_of(self, udp: bool, flow: Flow) -> int | None:
        laddr, lport, raddr, rport = flow
        a, b = self.address_code.get(laddr), self.address_code.get(raddr)
        if a is None or b is None or not (0 <= lport < PORTS and 0 <= rport < PORTS):
            return None
        key = int(self._key(np.array([int(udp)]), np.array([a]), np.array([lport]),
                            np.array([b]), np.array([rport]))[0])
        return key if key >= 0 else None

    def _key(self, udp: np.ndarray, laddr: np.ndarray, lport: np.ndarray, raddr: np.ndarray,
             rport: np.ndarray) -> np.ndarray:
        width = max(1, len(self.addresses))
        local = (udp * width + laddr) * PORTS + lport
        remote = raddr * PORTS + rport
        if width > WIDE:  # local * width * PORTS might not fit in 64 bits: number the locals
            if self._locals is None:
                rows = np.flatnonzero(self.kind > 0)
                self._locals = np.unique((((self.kind[rows] >= DATAGRAM) * width
                                           + self.laddr[rows]) * PORTS + self.lport[rows]))
            at = np.minimum(np.searchsorted(self._locals, local), len(self._locals) - 1)
            local = np.where(self._locals[at] == local, at, -1)
            return np.where(local >= 0, local * (width * PORTS) + remote, -1)
        return local * (width * PORTS) + remote


class RowValues:
    """Rows `a:b` of a batch as Python values, by row relative to `a`: what the walk reads of
    the rows it takes one at a time."""

    def __init__(self, sc: SocketColumns, cols: Any, a: int, b: int) -> None:
        self.addresses = sc.addresses
        self.seq = cols.seq[a:b].tolist()
        self.sk = cols.sk[a:b].tolist()
        self.sk_valid = cols.sk_valid[a:b].tolist()
        self.cpu = cols.cpu[a:b].tolist()
        self.cpu_known = sc.cpu_known[a:b].tolist()
        self.hash = cols.hash[a:b].tolist()
        self.hash_valid = sc.hash_valid[a:b].tolist()
        self.decidable = sc.decidable[a:b].tolist()  # a hash and a CPU
        laddr, lport = sc.laddr[a:b], sc.lport[a:b]
        self.dest = (laddr * PORTS + lport).tolist()  # what `SocketWalk.route_at` keys
        self.laddr, self.raddr = laddr.tolist(), sc.raddr[a:b].tolist()
        self.lport, self.rport = lport.tolist(), sc.rport[a:b].tolist()
        self.laddr_text, self.raddr_text = sc.texts("laddr", a, b), sc.texts("raddr", a, b)

    def flow(self, r: int) -> Flow:
        """Row `r`'s 4-tuple, addresses in the one spelling flows are keyed by."""
        return (self.addresses[self.laddr[r]], self.lport[r], self.addresses[self.raddr[r]],
                self.rport[r])


class Route:
    """A destination whose arrivals one group decides by hash, as the group is in one stretch:
    the listener the lookup selects on, and what a `Pick` of that selection records."""

    def __init__(self, host_state: HostState, head: Socket, state: fast.GroupState | None = None,
                 label: str | None = None) -> None:
        """(`state`, `label`: the group's `GroupState` and label, where the caller has them.)"""
        host = host_state.host
        reuse: SockReuseport = head.sk.sk_reuseport_cb  # type: ignore[assignment]
        self.reuse = reuse
        self.state = state = fast.GroupState.of(reuse) if state is None else state
        self.label = label = host.label_of(reuse) if label is None else label
        self.history: HistoryView = host_state.history.view(label)
        self.reuseport_id = reuse.reuseport_id
        members = state.members  # the live sockets: (sk_id, sk_state, sk_incoming_cpu)
        ids = tuple([m[0] for m in members])
        sock = host.sock
        self.socks = {sk_id: sock(sk_id) for sk_id in ids}
        self.base = replace_pick(_HASH_PICK, reuseport_id=reuse.reuseport_id,
                                 num_socks=reuse.num_socks, socks=ids,
                                 incoming_cpus=tuple([m[2] for m in members]),
                                 established=tuple([m[0] for m in members
                                                    if m[1] == TCP_ESTABLISHED]),
                                 prog=prog_label(reuse), group=label)
        self.fields = self.base.__dict__  # what every pick of the route starts from
        self.ids = ids
        self.slot_of = {sk_id: i for i, sk_id in enumerate(ids)}
        # two live members with one id (a trace that reused a socket's id before closing it):
        # a pick's slot is the chosen socket's own, which an id does not tell (`_route`)
        self.ambiguous = len(self.slot_of) < len(ids)
        self.cpu_values, tables = state.slot_tables()
        self.cpu_row = {cpu: k + 1 for k, cpu in enumerate(self.cpu_values.tolist())}
        self.tables = tables.tolist()
        self.by_cpu = self.state.by_cpu
        self.table = self.tables[0]
        self.n = reuse.num_socks
        # a classic program runs first (`run_bpf_filter()`): its answers, kept by the host
        self.prog = reuse.prog
        self.protocol = IPPROTO_UDP if head.proto == "udp" else IPPROTO_TCP
        self.classic = None if reuse.prog is None else ClassicAnswers.of(host_state,
                                                                          reuse.prog.insns)

    def current(self, host: Host) -> bool:
        """Whether the host's sockets of the route's ids are still those it queues on (a trace
        may open a socket of an id whose socket is still in a group)."""
        socks = host.socks
        return all(socks.get(sk_id) is s for sk_id, s in self.socks.items())

    def chosen(self, hash: int, cpu: int) -> int:
        """The socket `pick` chooses (`fast.NO_SOCKET` for none)."""
        table = self.tables[self.cpu_row.get(cpu, 0)] if self.by_cpu else self.tables[0]
        return table[(hash * self.n) >> 32]

    def pick(self, hash: int, cpu: int, seq: int) -> Pick:
        """What `select_traced` and `Host._label_pick` give an arrival with this hash and CPU:
        `replace_pick(self.base, ...)` spelled out, as every queued arrival makes one."""
        start = (hash * self.n) >> 32
        if self.by_cpu:
            sk = self.tables[self.cpu_row.get(cpu, 0)][start]
            slot = self.slot_of[sk]
            reason = "incoming-cpu"
        else:
            sk = self.table[start]
            slot = self.slot_of[sk]
            reason = "established-skip" if slot != start else "hash"
        pick = _new(Pick)
        fields = pick.__dict__
        fields.update(self.fields)
        fields["sk"] = sk
        fields["reason"] = reason
        fields["hash"] = hash
        fields["cpu"] = cpu
        fields["start"] = start
        fields["slot"] = slot
        fields["seq"] = seq
        return pick

    def classic_pick(self, hash: int, cpu: int, seq: int, flow: Flow,
                     payload: bytes | None) -> Pick | None:
        """What `select_traced` gives when the group's classic program runs first: the socket
        at the index it returns, else the hash's pick; None when the trace cannot tell what the
        program returns (the per-row path says why)."""
        classic: ClassicAnswers = self.classic  # type: ignore[assignment]
        key = classic.key(flow, payload, cpu)  # (`cbpf_index`, its memo inlined)
        index = _UNSEEN if key is None else classic.answers.get(key, _UNSEEN)
        if index is _UNSEEN:
            index = self.cbpf_index(flow, payload, cpu)
        if index is None:
            return None
        pick = self.pick(hash, cpu, seq) if index >= self.n else _new(Pick)
        fields = pick.__dict__
        if index < self.n:  # `replace_pick(self.base, ...)` spelled out
            fields.update(self.fields)
            fields["sk"] = self.ids[index]
            fields["reason"] = "cbpf"
            fields["hash"] = hash
            fields["cpu"] = cpu
            fields["slot"] = index
            fields["seq"] = seq
        fields["cbpf_index"] = index
        return pick

    def cbpf_index(self, flow: Flow, payload: bytes | None, cpu: int) -> int | None:
        """`bpf_prog_run()` of the group's classic program on this packet (None: unknown)."""
        classic: ClassicAnswers = self.classic  # type: ignore[assignment]
        key = classic.key(flow, payload, cpu)
        if key is not None:
            index = classic.answers.get(key, _UNSEEN)
            if index is not _UNSEEN:
                return index
        skb = loopback_skb(self.protocol, parse_ip(flow[2]), flow[3], parse_ip(flow[0]),
                           flow[1], payload, cpu)
        try:
            index = cbpf.bpf_prog_run(classic.insns, skb)
        except cbpf.Unknown:
            index = None
        if key is not None:
            if len(classic.answers) >= CLASSIC_ANSWERS:
                classic.answers.clear()
            classic.answers[key] = index
        return index


class ClassicAnswers:
    """A classic program's answers on one host's packets, memoized on exactly what it reads of
    a packet over loopback (`loopback_skb`) where its packet loads are at fixed offsets into
    the payload (`cbpf.payload_reads`): the payload bytes at those offsets, how many of them
    the payload has, its length if it loads it, the CPU if it loads `SKF_AD_CPU` and the IP
    version if it loads `SKF_AD_PROTOCOL`. Every group of the host the program (these
    instructions) is attached to shares them. A program that may read the headers is run on
    every packet (`key` None)."""

    __slots__ = ("insns", "memo", "offsets", "reach", "read", "length", "cpu", "family",
                 "answers")

    def __init__(self, insns: tuple[cbpf.Insn, ...]) -> None:
        self.insns = insns
        reads = cbpf.payload_reads(insns)
        self.memo = reads is not None
        self.offsets, self.length = reads if reads is not None else ((), False)
        self.reach = self.offsets[-1] + 1 if self.offsets else 0
        # the bytes at the offsets (an int for one): a payload as long as the reach has them all
        self.read = itemgetter(*self.offsets) if self.offsets else None
        loads = cbpf.ancillary_loads(insns)
        self.cpu = cbpf.SKF_AD_CPU in loads
        self.family = cbpf.SKF_AD_PROTOCOL in loads
        self.answers: dict[tuple, int | None] = {}

    @classmethod
    def of(cls, host_state: HostState, insns: tuple[cbpf.Insn, ...]) -> ClassicAnswers:
        memo = host_state.classic.get(insns)
        if memo is None:
            memo = host_state.classic[insns] = cls(insns)
        return memo

    def key(self, flow: Flow, payload: bytes | None, cpu: int) -> tuple | None:
        """What the program reads of this packet (None: more than the key can say)."""
        if not self.memo:
            return None
        read = self.read
        if payload is None or read is None:
            part: Any = None  # (no byte loaded, or none to load: every load is unknown)
        elif len(payload) >= self.reach:
            part = read(payload)
        else:  # a load past its end fails: the bytes it has (how many says which loads fail)
            part = bytes([payload[o] for o in self.offsets if o < len(payload)])
        return (part, len(payload) if self.length and payload is not None else None,
                cpu if self.cpu else None, ":" in flow[0] if self.family else None)


@dataclass
class Flows:
    """The flows of a walk's socket-layer rows, numbered in order of first row: for each row
    (relative, ascending) its flow, kind and whether it is an arrival; for each flow the
    position of its first row, its first and last row, its arrivals and observations."""

    rows: np.ndarray
    flow: np.ndarray
    count: int
    kind: np.ndarray
    arrival: np.ndarray
    first_at: np.ndarray
    first: np.ndarray
    last: np.ndarray
    arrivals: np.ndarray
    observations: np.ndarray

    @classmethod
    def of(cls, rows: np.ndarray, flow: np.ndarray, count: int, kind: np.ndarray) -> Flows:
        arrival = (kind == SYN) | (kind == DATAGRAM)
        arrivals = np.bincount(flow[arrival], minlength=count)
        first_at = _first_at(flow, count)
        last = np.zeros(count, dtype=np.int64)
        np.maximum.at(last, flow, rows)
        return cls(rows, flow, count, kind, arrival, first_at, rows[first_at], last, arrivals,
                   np.bincount(flow, minlength=count) - arrivals)

    def before(self, cut: int) -> Flows:
        """The rows before `cut`, which no flow spans: the flows keep their numbers."""
        kept = int(np.searchsorted(self.rows, cut))
        count = int(self.flow[:kept].max()) + 1 if kept else 0
        return Flows(self.rows[:kept], self.flow[:kept], count, self.kind[:kept],
                     self.arrival[:kept], self.first_at[:count], self.first[:count],
                     self.last[:count], self.arrivals[:count], self.observations[:count])


class SocketWalk:
    """Rows `a:b` of a batch, all of one host, with socket-layer arrivals or observations.

    `open_end`: the host's rows go on in the next batch. The walk then stops before the last
    rows when they belong to flows still waiting for an observation (`_cut`), and `run` says
    how far it went: the engine prepends the rest to the next batch, so flows that straddle the
    batch boundary are closed flows there instead of rows replayed one by one."""

    def __init__(self, engine: Faithful, hs: HostState, columns: Any, a: int, b: int,
                 open_end: bool = False) -> None:
        self.engine, self.hs, self.cols, self.a, self.b = engine, hs, columns, a, b
        self.open_end = open_end
        self.sc: SocketColumns = columns.socket()
        self.routes: list[Route] = []  # the routes this walk used
        self.index_of: dict[int, int] = {}  # id(route) -> its index in `routes`
        self.done = -1  # the last row (relative) replayed or queued in order
        self.ports: dict[tuple[int, int], ports.PortMemo | None] = {}  # (laddr, lport): memo
        # (event kind, destination): the index of its route in `routes`, None for none; both
        # kept until a row replayed one by one may have changed them (`_one`)
        self.route_at: dict[tuple[int, int], int | None] = {}
        self._values: RowValues | None = None
        self._cpu_rows: list[int] | None = None
        self._dest: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        # observations matched one by one, counted per (group, reuseport_id, expected, reset):
        # [how many, the last row (relative)]; None where the sink keeps results (a Decision each)
        self.tally: dict[tuple[str | None, int, int, bool], list[int]] | None = \
            {} if engine.sink.results is None else None

    @property
    def values(self) -> RowValues:
        """The rows as Python values (`RowValues`), made when a row is first taken one at a
        time: a walk that decides all in bulk never pays for them."""
        if self._values is None:
            self._values = RowValues(self.sc, self.cols, self.a, self.b)
        return self._values

    # -- the plan ---------------------------------------------------------------------------------
    def run(self) -> int:
        """Replay the rows; returns how many (from `a`) it replayed."""
        a, b, sc, cols = self.a, self.b, self.sc, self.cols
        kind = sc.kind[a:b]
        flows = self._flows(np.flatnonzero(kind > 0), kind)
        if self.open_end:
            cut = self._cut(flows, b - a)
            if cut < b - a:
                self.b = b = a + cut
                kind = kind[:cut]
                flows = flows.before(cut)
                self.flow_keys = self.flow_keys.slice(0, flows.count)
        n = b - a
        if not n:
            return 0
        events = cols.event_names(a, b)
        changes = np.array([name not in ROUTE_KEEPING for name in events[0]], dtype=bool)
        changes = changes[events[1]]
        epoch = np.cumsum(changes)  # route changes at or before each row
        is_closed = self._closed_flows(flows, epoch)
        in_closed = np.zeros(n, dtype=bool)
        in_closed[flows.rows] = is_closed[flows.flow]
        ordered = np.flatnonzero(~in_closed)
        arrivals = np.flatnonzero(in_closed & ((kind == SYN) | (kind == DATAGRAM)))
        self._walk(ordered, arrivals, in_closed, epoch, flows.flow, flows.rows, kind)
        return n

    def _flows(self, rows: np.ndarray, kind: np.ndarray) -> Flows:
        """The flows of the socket-layer rows `rows` (relative)."""
        if not len(rows):
            self.flow_keys = pa.array([], pa.int64())
            return Flows.of(rows, np.zeros(0, dtype=np.int64), 0, kind[rows])
        keys = self.sc.flow_keys(self.a, self.b)
        # numbered in order of first appearance, as `pc.dictionary_encode` numbers them, in
        # half its time (65k rows: 4.3 ms against 10.5)
        codes, uniques = pd.factorize(keys if len(rows) == len(keys) else keys[rows])
        self.flow_keys = pa.array(uniques, pa.int64())
        return Flows.of(rows, codes.astype(np.int64, copy=False), len(uniques), kind[rows])

    def _cut(self, flows: Flows, n: int) -> int:
        """Where to stop (relative): the last point at most `HOLD` rows from the end that no
        flow spans and after which every flow starts that still waits for an observation (more
        arrivals than observations: its `accept`s or `recv`s come later); `n` if none."""
        if not flows.count:
            return n
        first, last = flows.first, flows.last
        waiting = flows.arrivals > flows.observations
        limit = int(first[waiting].min()) if waiting.any() else n
        low = max(0, n - HOLD)
        if limit < low:
            return n
        spans = np.cumsum(np.bincount(first + 1, minlength=n + 2)
                          - np.bincount(last + 1, minlength=n + 2))  # spans[c]: first < c <= last
        free = np.flatnonzero(spans[low:limit + 1] == 0)
        return low + int(free[-1]) if len(free) else n

    def _closed_flows(self, flows: Flows, epoch: np.ndarray) -> np.ndarray:
        """Whether each flow can be closed: see the module."""
        sc, a = self.sc, self.a
        self.first_row = first = flows.first
        self.several = False
        if not flows.count:
            return np.zeros(0, dtype=bool)
        rows, flow, k, arrival = flows.rows, flows.flow, flows.kind, flows.arrival
        n_arr = flows.arrivals
        udp = k[flows.first_at] >= DATAGRAM  # (a flow's key says TCP or UDP)
        ok = (n_arr == flows.observations) & (n_arr >= 1) & (udp | (n_arr == 1))  # TCP: one syn
        ok &= epoch[first] == epoch[flows.last]
        ok &= arrival[flows.first_at]  # no observation before its arrival (all for one arrival)
        ok[flow[k == RESET]] = False
        ok[flow[arrival & ~sc.decidable[rows + a]]] = False
        several = ok & (n_arr > 1)
        if several.any():
            self.several = True
            self._in_order(ok, several, flow, arrival)
        self._not_pending(ok)
        self._payloads_agree(ok, rows, flow, arrival)
        return ok

    def _in_order(self, ok: np.ndarray, several: np.ndarray, flow: np.ndarray,
                  arrival: np.ndarray) -> None:
        """Flows `several` (more than one arrival): no observation before its arrival."""
        mine = np.flatnonzero(several[flow])
        order = mine[np.argsort(flow[mine], kind="stable")]  # by flow, then row
        delta = np.where(arrival[order], 1, -1)
        running = np.cumsum(delta)
        sorted_flow = flow[order]
        starts = np.flatnonzero(np.r_[True, sorted_flow[1:] != sorted_flow[:-1]])
        before = running[starts] - delta[starts]
        early = np.minimum.reduceat(running, starts) - before < 0
        ok[sorted_flow[starts][early]] = False

    def _not_pending(self, ok: np.ndarray) -> None:
        conns, datagrams = self.hs.host.pending()
        keys = [key for udp, flows in ((False, conns), (True, datagrams)) for flow in flows
                if (key := self.sc.key_of(udp, flow)) is not None]
        if keys:
            at = pc.index_in(pa.array(keys, pa.int64()), value_set=self.flow_keys)
            ok[at.drop_null().to_numpy(zero_copy_only=False)] = False

    def _payloads_agree(self, ok: np.ndarray, rows: np.ndarray, flow: np.ndarray,
                        arrival: np.ndarray) -> None:
        """A `recv` that carries its payload must carry its datagram's (in arrival order)."""
        payload = self.sc.batch.column("payload")
        k = self.sc.kind[rows + self.a]
        recv_rows = rows[k == RECV] + self.a
        if not len(recv_rows) or payload.null_count == len(payload):
            return
        if not payload.is_valid().to_numpy(zero_copy_only=False)[recv_rows].any():
            return
        order = np.argsort(flow, kind="stable")  # by flow, then row (`rows` ascend)
        sorted_rows = rows[order]
        sorted_flow = flow[order]
        inside = ok[sorted_flow]
        arr = sorted_rows[arrival[order] & inside] + self.a
        obs = sorted_rows[~arrival[order] & inside] + self.a
        obs_flow = sorted_flow[~arrival[order] & inside]
        same = pc.equal(payload.take(pa.array(obs)), payload.take(pa.array(arr)))
        named = payload.take(pa.array(obs)).is_valid().to_numpy(zero_copy_only=False)
        agree = same.fill_null(False).to_numpy(zero_copy_only=False) | ~named
        ok[obs_flow[~agree]] = False

    # -- the walk ---------------------------------------------------------------------------------
    def _walk(self, ordered: np.ndarray, arrivals: np.ndarray, in_closed: np.ndarray,
              epoch: np.ndarray, flow_of_row: np.ndarray, rows: np.ndarray,
              kind: np.ndarray) -> None:
        """Rows `ordered` in order; on entering each epoch (after the route change that opens
        it) the routes of its closed arrivals, which fall back to `ordered` where none decides."""
        a, b, sc, cols = self.a, self.b, self.sc, self.cols
        dicts = cols.rows_of(a, b)
        dest = sc.laddr[a:b] * PORTS + sc.lport[a:b]
        epochs = int(epoch[-1]) + 1
        arrival_bounds = np.searchsorted(epoch[arrivals], np.arange(epochs + 1)).tolist()
        ordered_bounds = np.searchsorted(epoch[ordered], np.arange(epochs + 1)).tolist()
        ordered_list = ordered.tolist()
        arrival_key = (kind[arrivals].astype(np.int64) * (dest.max() + 1 if len(dest) else 1)
                       + dest[arrivals])
        self.route_of = np.full(len(arrivals), -1, dtype=np.int64)
        flows = np.full(len(kind), -1, dtype=np.int64)
        flows[rows] = flow_of_row
        routes = self.route_at
        kinds = kind.tolist()
        row_bounds = np.searchsorted(epoch, np.arange(epochs + 1)).tolist()
        lists = _Lists(arrivals, kinds, dest, flows)
        observe, route_of, queue, deliver, one = (self._observe, self._route, self._queue,
                                                  self._deliver, self._one)
        known = self.routes
        v: RowValues | None = None  # (made when a row is first taken in order)
        for e in range(epochs):
            todo = ordered_list[ordered_bounds[e]:ordered_bounds[e + 1]]
            if e > 0:  # the route change that opens the epoch
                self._one(todo[0], dicts[todo[0]])
                todo = todo[1:]
            lo, hi = arrival_bounds[e], arrival_bounds[e + 1]
            if hi > lo:
                fallback = self._tag(lo, hi, arrivals, arrival_key, lists, routes)
                if fallback:
                    todo = self._fall_back(todo, fallback, lists.flows, in_closed,
                                           row_bounds[e], row_bounds[e + 1])
            for r in todo:
                k = kinds[r]
                if not k:  # neither an arrival nor an observation
                    one(r, dicts[r])
                    continue
                if v is None:
                    v = self.values
                    decidable, dests, hashes, cpus, seqs = (v.decidable, v.dest, v.hash, v.cpu,
                                                            v.seq)
                if k == ACCEPT or k == RECV or k == RESET:
                    observe(r, k)
                    continue
                if decidable[r]:  # an arrival a route may decide
                    d = dests[r]
                    route = routes.get((k, d), _UNSEEN)
                    if route is _UNSEEN:
                        route = route_of(routes, k, d, r)
                    if route is not None and queue(r, k, known[route], hashes[r], cpus[r],
                                                   seqs[r]):
                        continue
                if k == DATAGRAM and deliver(r):
                    continue
                one(r, dicts[r])
        self._sync_cpu(b - a)
        if self.tally:
            self.engine.sink.add_match_counts(self.hs.name, self.tally, a)
            self.tally.clear()
        self._decide_closed(arrivals, flows, in_closed, kind)

    def _tag(self, lo: int, hi: int, arrivals: np.ndarray, key: np.ndarray, lists: _Lists,
             routes: dict) -> set[int]:
        """Closed arrivals `lo:hi` of one epoch: the route of each; returns the flows of those
        no route decides."""
        fallback: set[int] = set()
        kind = lists.kind
        if hi - lo <= FEW:  # (`_hash_route` inlined, and the routes kept looked up first)
            dest, flows = lists.dest, lists.flows
            known, tagged = self.routes, []
            for r in lists.arrivals[lo:hi]:
                k, d = kind[r], dest[r]
                route = routes.get((k, d), _UNSEEN)
                if route is _UNSEEN:
                    route = self._route(routes, k, d, r)
                if route is None or known[route].prog is not None:
                    fallback.add(flows[r])
                    tagged.append(-1)
                else:
                    tagged.append(route)
            self.route_of[lo:hi] = tagged
            return fallback
        code, values, first = self._destinations(arrivals, key)
        mine = code[lo:hi]
        if len(values) <= hi - lo:
            present = np.flatnonzero(np.bincount(mine, minlength=len(values)))
        else:
            present = np.unique(mine)
        present = present[np.argsort(values[present])]  # resolved in the order of their keys
        found = np.full(len(values), -1, dtype=np.int64)
        # a few destinations: read from the arrays, not from `lists` (whose lists of every row
        # cost more to make than these lookups: steady traffic tags in bulk only)
        for u in present.tolist():
            r = int(arrivals[first[u]])
            route = self._hash_route(routes, kind[r], lists.dest_of(r), r)
            found[u] = -1 if route is None else route
        tagged = found[mine]
        self.route_of[lo:hi] = tagged
        if (tagged < 0).any():
            flows = lists.flows
            fallback.update([flows[r] for r in arrivals[lo:hi][tagged < 0].tolist()])
        return fallback

    def _destinations(self, arrivals: np.ndarray,
                      key: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The destinations (event kind, laddr, lport) of the closed arrivals, numbered: the
        number of each arrival, each number's key and an arrival (index) to it."""
        if self._dest is None:
            low = int(key.min())
            span = int(key.max()) - low + 1
            if span <= DENSE:  # a few ports: numbered in key order without hashing
                present = np.zeros(span, dtype=bool)
                present[key - low] = True
                values = np.flatnonzero(present) + low
                code = (np.cumsum(present) - 1)[key - low]
                first = np.empty(len(values), dtype=np.int64)
                first[code] = np.arange(len(code))  # any arrival of each: they go to one place
            else:
                encoded = pc.dictionary_encode(pa.array(key))
                code = encoded.indices.to_numpy().astype(np.int64)
                values = encoded.dictionary.to_numpy()
                first = _first_at(code, len(values))
            self._dest = code, values, first
        return self._dest

    def _hash_route(self, routes: dict, k: int, dest: int, r: int) -> int | None:
        """`_route` where the hash alone decides (no program): what closed flows need."""
        route = self._route(routes, k, dest, r)
        return None if route is None or self.routes[route].prog is not None else route

    def _route(self, routes: dict, k: int, dest: int, r: int) -> int | None:
        key = (k, dest)
        index = routes.get(key, _UNSEEN)
        if index is not _UNSEEN:
            return index
        sc, i, hs = self.sc, r + self.a, self.hs
        head = hs.host.hash_route(ARRIVAL_EVENT[k], sc.addresses[int(sc.laddr[i])],
                                  int(sc.lport[i]), classic=True)
        index = None
        if head is not None and not (route := self._known_route(head)).ambiguous:
            index = self.index_of.get(id(route))
            if index is None:
                index = self.index_of[id(route)] = len(self.routes)
                self.routes.append(route)
        routes[key] = index
        return index

    def _known_route(self, head: Socket) -> Route:
        """The route through `head` as its group is now, reused while the group, its label and
        the label's history stay as they were."""
        hs = self.hs
        reuse = head.sk.sk_reuseport_cb
        label = hs.host.label_of(reuse)
        state = fast.GroupState.of(reuse)
        key = (id(head), id(reuse), id(reuse.prog), state, label, hs.history.mark(label))
        cache = hs.routes
        route = cache.get(key)
        if route is None or route.prog is not reuse.prog or not route.current(hs.host):
            if len(cache) >= ROUTE_CACHE:
                cache.clear()
            route = cache[key] = Route(hs, head, state, label)
        return route

    def _fall_back(self, todo: list[int], out: set[int], flows: list[int],
                   in_closed: np.ndarray, lo: int, hi: int) -> list[int]:
        """Flows whose destination no hash decides in the epoch of rows `lo:hi`: their rows
        join `todo`. Returns the new `todo`."""
        mine = [r for r, flow, closed in zip(range(lo, hi), flows[lo:hi],
                                              in_closed[lo:hi].tolist())
                if closed and flow in out]
        in_closed[mine] = False
        return sorted(todo + mine)

    def _one(self, r: int, row: dict) -> None:
        """Row `r` through the faithful path, the namespace's CPU as the per-row path leaves it.
        A row that may change a socket, group or bucket (any but `PORT_KEEPING`) makes the
        walk forget its routes and the port memos it may have changed (`SOCKET_ROWS`; all for
        any other row)."""
        event = row["event"]
        memos = self.ports
        if event not in PORT_KEEPING:
            self.route_at.clear()
            if memos and (event not in SOCKET_ROWS or row["sk"] is None
                          or row.get("sk2") is not None):
                memos.clear()
        if event in PORT_KEEPING or not memos:
            self._run(r, row)
            return
        host, sk = self.hs.host, row["sk"]
        before, labels = self._lport(sk), (host.bound, host.labelled)
        self._run(r, row)
        if (host.bound, host.labelled) != labels:
            memos.clear()
            return
        after = self._lport(sk)
        for dest in [dest for dest, memo in memos.items()
                     if memo is None or dest[1] == before or dest[1] == after or sk in memo.ids]:
            del memos[dest]

    def _run(self, r: int, row: dict) -> None:
        """Row `r` through the faithful path, the namespace's CPU set as it would be."""
        self._sync_cpu(r)
        self.engine.row(self.hs, row, r + self.a)
        self.done = r

    def _lport(self, sk: int) -> int | None:
        """The local port of the host's socket `sk` (None: no such socket, or unbound)."""
        s = self.hs.host.socks.get(sk)
        return s.lport if s is not None else None

    def _deliver(self, r: int) -> bool:
        """A datagram no hash route decides, delivered by its port's memoized lookup
        (`tracekit.replay.ports`); False (nothing done) where the port has none."""
        v, hs = self.values, self.hs
        if not v.cpu_known[r]:
            return False
        dest = (v.laddr[r], v.lport[r])
        memo = self.ports.get(dest, ports.NO_MEMO)
        if memo is ports.NO_MEMO:
            memo = self.ports[dest] = ports.memo_of(hs.ports, hs.host, self.sc.addresses[dest[0]],
                                                    dest[1], self._known_route)
        if memo is None:
            return False
        host, seq, cpu = hs.host, v.seq[r], v.cpu[r]
        host.seq = seq
        host.net.cpu = cpu
        self.done = r
        memo.deliver(host, v.flow(r), v.hash[r] if v.hash_valid[r] else None, cpu, seq,
                     self.sc.payload(r + self.a), self._known_route)
        return True

    def _observe(self, r: int, k: int) -> None:
        """Observation row `r` (relative) as the per-row path takes it: paired by the host's
        pairing; a match is counted without a decision record unless results are kept, in
        `tally` (handed to the sink when the walk ends: `DecisionSink.add_match_counts`).
        (Nothing here reads or sets the namespace's CPU, so the CPU is left for the next row
        that does.)"""
        hs, v = self.hs, self._values  # (made before the walk takes a row in order)
        host = hs.host
        seq = v.seq[r]
        host.seq = seq
        addresses = v.addresses  # (`v.flow(r)`, inlined)
        flow = (addresses[v.laddr[r]], v.lport[r], addresses[v.raddr[r]], v.rport[r])
        sk = v.sk[r] if v.sk_valid[r] else None
        if k == RECV:
            # the row a deferred `recv` is decided with (its token), filled in only then
            token: dict = {}
            exp = host.datagram_observed(sk, flow, self.sc.payload(r + self.a), token)
            if exp.deferred:
                token.update(self._observation(r, k, seq, flow, sk))
                return
            observed = sk
        else:
            exp = host.conn_observed(flow)
            observed = sk if k == ACCEPT else -1
        pick = exp.pick
        tally = self.tally
        if exp.unknown is None and exp.expected == observed and tally is not None \
                and pick is not None:
            key = (pick.group, pick.reuseport_id, observed, k == RESET)
            counted = tally.get(key)
            if counted is None:
                tally[key] = [1, r]
            else:
                counted[0] += 1
                counted[1] = r
        else:
            self.engine.decide(hs, self._observation(r, k, seq, flow, sk), r + self.a, exp,
                               observed)

    def _observation(self, r: int, k: int, seq: int, flow: Flow, sk: int | None) -> dict:
        """Observation row `r` (relative) as the dict the per-row path reads of it."""
        v = self.values
        return {"seq": seq, "event": OBSERVATION_EVENT[k], "laddr": v.laddr_text[r],
                "lport": flow[1], "raddr": v.raddr_text[r], "rport": flow[3], "sk": sk}

    def _sync_cpu(self, r: int) -> None:
        """Set the namespace's CPU to that of the last arrival before row `r` (relative) if no
        row replayed since: the closed arrivals in between set it in the per-row path."""
        if self._cpu_rows is None:
            kind = self.sc.kind[self.a:self.b]
            sets = ((kind == SYN) | (kind == DATAGRAM)) & self.cols.cpu_valid[self.a:self.b]
            self._cpu_rows = np.flatnonzero(sets).tolist()
        at = bisect_left(self._cpu_rows, r) - 1  # type: ignore[arg-type]
        if at >= 0 and self._cpu_rows[at] > self.done:
            self.hs.host.net.cpu = int(self.cols.cpu[self.a + self._cpu_rows[at]])

    def _queue(self, r: int, k: int, route: Route, hash: int, cpu: int, seq: int) -> bool:
        """An arrival its group decides: queued as `syn` / `datagram` would after their lookup.
        False (nothing done) where the group's classic program's answer is unknown."""
        host, sc, i, v = self.hs.host, self.sc, r + self.a, self._values
        addresses = v.addresses  # (`v.flow(r)`, inlined)
        flow = (addresses[v.laddr[r]], v.lport[r], addresses[v.raddr[r]], v.rport[r])
        payload = sc.payload(i) if route.prog is not None or k == DATAGRAM else None
        if route.prog is None:
            pick = route.pick(hash, cpu, seq)
        else:
            pick = route.classic_pick(hash, cpu, seq, flow, payload)  # type: ignore[assignment]
            if pick is None:
                return False
        host.seq = seq
        host.net.cpu = cpu
        self.done = r
        target = route.socks[pick.sk]
        if k == SYN:
            host.queue_syn(flow, hash, sc.sk_hash(i), target, pick)
        else:
            host.queue_datagram(flow, target, pick, cpu, payload)
        return True

    # -- closed flows -----------------------------------------------------------------------------
    def _decide_closed(self, arrivals: np.ndarray, flows: np.ndarray, in_closed: np.ndarray,
                       kind: np.ndarray) -> None:
        keep = in_closed[arrivals]
        if not keep.any():
            return
        arrivals, route = arrivals[keep], self.route_of[keep]
        a, cols = self.a, self.cols
        at = arrivals + a
        cpu = cols.cpu[at]
        tables = _tabulate(tuple(r.state for r in self.routes), int(cpu.max()))
        expected, answer, start = tables.lookup(route, cols.hash[at], cpu)
        stride = tables.width + 1
        slot = answer - route * stride
        reason = (slot != start).astype(np.int64)  # REASONS: hash, established-skip
        if tables.by_cpu.any():
            reason[tables.by_cpu[route]] = 2  # incoming-cpu
        # every arrival of a flow: one socket, one reason, one route
        flow = flows[arrivals]
        packed = answer * 4 + reason  # (`answer` says the route and the slot)
        of_flow = np.full(len(self.first_row), -1, dtype=np.int64)
        of_flow[flow] = packed  # any arrival's: they all agree, or the flow is not good
        good = np.ones(len(self.first_row), dtype=bool)
        if self.several:
            good[flow[packed != of_flow[flow]]] = False
        # every observation names that socket
        observations = np.flatnonzero(in_closed & ((kind == ACCEPT) | (kind == RECV)))
        obs_flow = flows[observations]
        obs_packed = of_flow[obs_flow]
        named = cols.sk[observations + a] == tables.ids[obs_packed >> 2]
        if not named.all():
            good[obs_flow[~named]] = False
        if not good.all():
            self._late(arrivals, route, flows, in_closed, kind,
                       set(np.flatnonzero(~good).tolist()))
            fine = good[obs_flow]
            observations, obs_packed = observations[fine], obs_packed[fine]
        if not len(observations):
            return
        answer = obs_packed >> 2
        self._matches(observations, answer // stride, tables.ids[answer], obs_packed & 3, kind,
                      answer, tables)

    def _matches(self, rows: np.ndarray, route: np.ndarray, expected: np.ndarray,
                 reason: np.ndarray, kind: np.ndarray, answer: np.ndarray,
                 tables: fast.BatchTables) -> None:
        """Observations `rows` (relative, ascending) that matched, each on `route` expecting
        `expected` (`answer`: its index in `tables.ids`)."""
        sink, host, routes, a = self.engine.sink, self.hs.name, self.routes, self.a
        labels: dict[str, int] = {}
        label_of = np.array([labels.setdefault(r.label, len(labels)) for r in routes],
                            dtype=np.int64)
        names = list(labels)
        stride = tables.width + 1
        per_route = np.bincount(route, minlength=len(routes))
        last = np.full(len(routes), -1, dtype=np.int64)
        np.maximum.at(last, route, rows)
        per_answer = np.bincount(answer, minlength=len(routes) * stride).reshape(-1, stride)
        used = np.flatnonzero(per_route)
        for li in np.unique(label_of[used]).tolist():
            mine = used[label_of[used] == li]
            latest = int(mine[np.argmax(last[mine])])
            sink.add_matches(host, names[li], routes[latest].reuseport_id, None,
                             int(per_route[mine].sum()), int(last[latest]) + a)
            load: dict[int, int] = {}
            for g in mine.tolist():
                for s in np.flatnonzero(per_answer[g]).tolist():
                    sk = int(tables.ids[g * stride + s])
                    load[sk] = load.get(sk, 0) + int(per_answer[g, s])
            for sk in sorted(load):
                sink.add_load(host, names[li], sk, load[sk])
        if sink.results is None:
            return
        lab = label_of[route]
        i = rows + a
        batch, nrows = self.cols.batch, len(rows)
        take = pa.array(i)
        rid = np.array([r.reuseport_id for r in routes], dtype=np.int64)[route]
        event = np.where(kind[rows] == ACCEPT, 0, 1)
        sk_hash_free = pa.array(expected, pa.int64())
        sink.add_rows(i, pa.RecordBatch.from_arrays([
            repeated(host, nrows), pa.array(self.cols.seq[i], pa.int64()),
            decoded(event, pa.array(["accept", "recv"])),
            _string(batch.column("laddr").take(take)), batch.column("lport").take(take),
            _string(batch.column("raddr").take(take)), batch.column("rport").take(take),
            pa.array(self.cols.sk[i], pa.int64()), decoded(lab, pa.array(names, pa.string())),
            pa.array(rid, pa.int64(), mask=rid < 0), sk_hash_free, sk_hash_free,
            repeated("match", nrows), decoded(reason, pa.array(list(REASONS))),
            pa.nulls(nrows, pa.string()),
        ], schema=DECISION_SCHEMA))

    def _late(self, arrivals: np.ndarray, route: np.ndarray, flows: np.ndarray,
              in_closed: np.ndarray, kind: np.ndarray, bad: set[int]) -> None:
        """Closed flows with a verdict other than match: their rows one by one, arrivals queued
        with the picks of their time, observations through the host's pairing, explained with
        the group's history of that time. Nothing else of the flow is in the host or this walk,
        so the host's pairing sees what it would have seen then."""
        a, cols, sc, host, hs = self.a, self.cols, self.sc, self.hs.host, self.hs
        route_at = dict(zip(arrivals.tolist(), route.tolist()))
        mine = np.flatnonzero(in_closed & np.isin(flows, list(bad)))
        history_of: dict[int, HistoryView] = {}
        saved_seq, saved_cpu = host.seq, host.net.cpu
        for r, row in zip(mine.tolist(), cols.dicts(mine + a)):
            k = int(kind[r])
            i = r + a
            flow = (sc.addresses[int(sc.laddr[i])], int(sc.lport[i]),
                    sc.addresses[int(sc.raddr[i])], int(sc.rport[i]))
            if k == SYN or k == DATAGRAM:
                rt = self.routes[route_at[r]]
                history_of[int(flows[r])] = rt.history
                pick = rt.pick(int(cols.hash[i]), int(cols.cpu[i]), int(cols.seq[i]))
                if k == SYN:
                    host.queue_syn(flow, pick.hash, row["sk_hash"], rt.socks[pick.sk], pick)
                else:
                    host.queue_datagram(flow, rt.socks[pick.sk], pick, None, row["payload"])
                continue
            self.engine.observe(hs, row, i, history_of[int(flows[r])])
        host.seq, host.net.cpu = saved_seq, saved_cpu


class _Lists:
    """What `SocketWalk._tag` reads per arrival, as lists: the closed arrivals (rows), and by
    row the event kind, destination and flow; each made from its array when first read (a walk
    whose epochs are all decided in bulk never reads them: steady traffic)."""

    def __init__(self, arrivals: np.ndarray, kind: list[int], dest: np.ndarray,
                 flows: np.ndarray) -> None:
        self._arrivals, self.kind, self._dest, self._flows = arrivals, kind, dest, flows

    @cached_property
    def arrivals(self) -> list[int]:
        return self._arrivals.tolist()

    @cached_property
    def dest(self) -> list[int]:
        return self._dest.tolist()

    @cached_property
    def flows(self) -> list[int]:
        return self._flows.tolist()

    def dest_of(self, row: int) -> int:
        """`dest[row]`, without making the list."""
        return int(self._dest[row])


def _first_at(flow: np.ndarray, count: int) -> np.ndarray:
    """The position of each flow's first row, for flows numbered in order of first row."""
    new = np.empty(len(flow), dtype=bool)
    if not len(flow):
        return np.zeros(0, dtype=np.int64)
    new[0] = True
    np.greater(flow[1:], np.maximum.accumulate(flow)[:-1], out=new[1:])
    at = np.flatnonzero(new)
    assert len(at) == count
    return at


@lru_cache(maxsize=64)
def _tabulate(states: tuple[fast.GroupState, ...], max_cpu: int) -> fast.BatchTables:
    """`fast.tabulate`, kept for the next batches: in steady traffic they use the same routes."""
    return fast.tabulate(states, max_cpu)


_LAST: dict[str, tuple[pa.Array, list, list]] = {}


def _spellings(name: str, dictionary: pa.Array) -> tuple[list, list]:
    """The texts of a column's dictionary (and None, for nulls) and their spellings; the
    batches of one row group share theirs, so the last one is kept, per column."""
    last = _LAST.get(name)
    if last is not None and len(last[0]) == len(dictionary) and last[0].equals(dictionary):
        return last[1], last[2]
    texts = dictionary.to_pylist()
    spellings = [_spelled(text) for text in texts]
    _LAST[name] = (dictionary, texts + [None], spellings)
    return texts + [None], spellings


@lru_cache(maxsize=1 << 16)
def _spelled(text: str | None) -> str | None:
    """The one spelling of an address (`normal_ip`), None for what is not one (the faithful
    path refuses it); kept across batches, which name the same addresses again and again."""
    return normal_ip(text) if text is not None and is_ip_text(text) else None


def _valid(column: pa.Array) -> np.ndarray:
    return column.is_valid().to_numpy(zero_copy_only=False)


def _ints(column: pa.Array) -> np.ndarray:
    if column.null_count == len(column):
        return np.full(len(column), -1, dtype=np.int64)
    return pc.fill_null(column, -1).to_numpy(zero_copy_only=False).astype(np.int64)




def _string(column: pa.Array) -> pa.Array:
    return column.cast(pa.string()) if column.type != pa.string() else column
