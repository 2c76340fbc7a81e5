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
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tracekit.kernel import cbpf
from tracekit.kernel.packet import loopback_skb
from tracekit.kernel.sock import IPPROTO_TCP, IPPROTO_UDP
from tracekit.kernel.socket_layer.addresses import normal_ip, parse_ip
from tracekit.kernel.socket_layer.host import Flow, Socket
from tracekit.kernel.socket_layer.selection import Pick, prog_label, replace_pick
from tracekit.kernel.sock_reuseport import SockReuseport
from tracekit.replay import fast, ports
from tracekit.replay.decision import DECISION_SCHEMA, decoded, repeated
from tracekit.replay.history import HistoryView
from tracekit.replay.state import Faithful, HostState
from tracekit.trace.checks import is_ip_text

__all__ = ["ROUTE_KEEPING", "SocketColumns", "SocketWalk"]

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
ROUTE_CACHE = 1024
"""Routes a host keeps for reuse across stretches (`HostState.routes`)."""


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
        has_flow = (self.laddr >= 0) & (self.raddr >= 0) & (self.lport >= 0) & (self.rport >= 0)
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
        self.spelled[name] = (column.dictionary.to_pylist() + [None], indices)
        remap = []
        for text in column.dictionary.to_pylist():
            if not is_ip_text(text):  # the faithful path refuses it
                remap.append(-1)
                continue
            spelled = normal_ip(text)
            remap.append(self.address_code.setdefault(spelled, len(self.address_code)))
            if len(self.addresses) < len(self.address_code):
                self.addresses.append(spelled)
        lookup = np.array(remap + [-1], dtype=np.int64)
        return lookup[indices]

    def flow_keys(self, rows: np.ndarray) -> np.ndarray:
        """One int64 per row naming (TCP or UDP, laddr, lport, raddr, rport)."""
        width = max(1, len(self.addresses))
        udp = (self.kind[rows] >= DATAGRAM).astype(np.int64)
        key = (udp * width + self.laddr[rows]) * 65536 + self.lport[rows]
        return ((key * width + self.raddr[rows]) * 65536) + self.rport[rows]

    def key_of(self, udp: bool, flow: Flow) -> int | None:
        laddr, lport, raddr, rport = flow
        a, b = self.address_code.get(laddr), self.address_code.get(raddr)
        if a is None or b is None:
            return None
        width = max(1, len(self.addresses))
        return (((int(udp) * width + a) * 65536 + lport) * width + b) * 65536 + rport


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
        self.laddr, self.raddr = sc.laddr[a:b].tolist(), sc.raddr[a:b].tolist()
        self.lport, self.rport = sc.lport[a:b].tolist(), sc.rport[a:b].tolist()
        self.laddr_text, self.raddr_text = sc.texts("laddr", a, b), sc.texts("raddr", a, b)

    def flow(self, r: int) -> Flow:
        """Row `r`'s 4-tuple, addresses in the one spelling flows are keyed by."""
        return (self.addresses[self.laddr[r]], self.lport[r], self.addresses[self.raddr[r]],
                self.rport[r])


class Route:
    """A destination whose arrivals one group decides by hash, as the group is in one stretch:
    the listener the lookup selects on, and what a `Pick` of that selection records."""

    def __init__(self, host_state: HostState, head: Socket) -> None:
        host = host_state.host
        reuse: SockReuseport = head.sk.sk_reuseport_cb  # type: ignore[assignment]
        self.reuse = reuse
        self.state = fast.GroupState.of(reuse)
        self.label = host.label_of(reuse)
        self.history: HistoryView = host_state.history.view(self.label)
        self.reuseport_id = reuse.reuseport_id
        live = reuse.live()
        self.socks = {s.sk_id: host.sock(s.sk_id) for s in live}
        self.base = Pick(sk=-1, reason="hash", reuseport_id=reuse.reuseport_id,
                         num_socks=reuse.num_socks, socks=tuple(s.sk_id for s in live),
                         incoming_cpus=tuple(s.sk_incoming_cpu for s in live),
                         established=tuple(s.sk_id for s in live if s.sk_state == 1),
                         prog=prog_label(reuse), group=self.label)
        self.slot_of = {sk_id: i for i, sk_id in enumerate(self.base.socks)}
        self.cpu_values, tables = fast.slot_tables(reuse)
        self.cpu_row = {cpu: k + 1 for k, cpu in enumerate(self.cpu_values.tolist())}
        self.tables = tables.tolist()
        self.by_cpu = self.state.by_cpu
        self.n = reuse.num_socks
        # a classic program runs first (`run_bpf_filter()`): its answer per packet, memoized on
        # what it reads of the packet when that is the payload's first bytes and the CPU
        self.prog = reuse.prog
        self.protocol = IPPROTO_UDP if head.proto == "udp" else IPPROTO_TCP
        self.reach = cbpf.payload_reach(reuse.prog.insns) if reuse.prog is not None else None
        self.classic: dict[Any, int | None] = {}

    def chosen(self, hash: int, cpu: int) -> int:
        """The socket `pick` chooses (`fast.NO_SOCKET` for none)."""
        table = self.tables[self.cpu_row.get(cpu, 0)] if self.by_cpu else self.tables[0]
        return table[(hash * self.n) >> 32]

    def pick(self, hash: int, cpu: int, seq: int) -> Pick:
        """What `select_traced` and `Host._label_pick` give an arrival with this hash and CPU."""
        start = (hash * self.n) >> 32
        table = self.tables[self.cpu_row.get(cpu, 0)] if self.by_cpu else self.tables[0]
        sk = table[start]
        slot = self.slot_of[sk]
        reason = "incoming-cpu" if self.by_cpu else ("established-skip" if slot != start
                                                     else "hash")
        return replace_pick(self.base, sk=sk, reason=reason, hash=hash, cpu=cpu, start=start,
                            slot=slot, seq=seq)

    def classic_pick(self, hash: int, cpu: int, seq: int, flow: Flow,
                     payload: bytes | None) -> Pick | None:
        """What `select_traced` gives when the group's classic program runs first: the socket
        at the index it returns, else the hash's pick; None when the trace cannot tell what the
        program returns (the per-row path says why)."""
        index = self.cbpf_index(flow, payload, cpu)
        if index is None:
            return None
        if index < self.n:
            return replace_pick(self.base, sk=self.base.socks[index], reason="cbpf", hash=hash,
                                cpu=cpu, slot=index, cbpf_index=index, seq=seq)
        return replace_pick(self.pick(hash, cpu, seq), cbpf_index=index)

    def cbpf_index(self, flow: Flow, payload: bytes | None, cpu: int) -> int | None:
        """`bpf_prog_run()` of the group's classic program on this packet (None: unknown)."""
        key = None
        if self.reach is not None:
            reach, length = self.reach
            key = (None if payload is None else payload[:reach],
                   len(payload) if length and payload is not None else None, cpu)
            if key in self.classic:
                return self.classic[key]
        skb = loopback_skb(self.protocol, parse_ip(flow[2]), flow[3], parse_ip(flow[0]),
                           flow[1], payload, cpu)
        try:
            index: int | None = cbpf.bpf_prog_run(self.prog.insns, skb)  # type: ignore[union-attr]
        except cbpf.Unknown:
            index = None
        if key is not None:
            self.classic[key] = index
        return index


class SocketWalk:
    """Rows `a:b` of a batch, all of one host, with socket-layer arrivals or observations."""

    def __init__(self, engine: Faithful, hs: HostState, columns: Any, a: int, b: int) -> None:
        self.engine, self.hs, self.cols, self.a, self.b = engine, hs, columns, a, b
        self.sc: SocketColumns = columns.socket()
        self.routes: list[Route] = []  # the routes this walk used
        self.index_of: dict[int, int] = {}  # id(route) -> its index in `routes`
        self.done = -1  # the last row (relative) replayed or queued in order
        self.ports: dict[tuple[int, int], ports.PortMemo | None] = {}  # since the last `_one`
        self.values = RowValues(self.sc, columns, a, b)
        self._cpu_rows: list[int] | None = None

    # -- the plan ---------------------------------------------------------------------------------
    def run(self) -> None:
        a, b, sc, cols = self.a, self.b, self.sc, self.cols
        n = b - a
        kind = sc.kind[a:b]
        rows = np.flatnonzero(kind > 0)
        events = cols.event_names(a, b)
        changes = np.array([name not in ROUTE_KEEPING for name in events[0]], dtype=bool)
        changes = changes[events[1]]
        epoch = np.cumsum(changes)  # route changes at or before each row
        closed = self._closed_flows(rows, kind, epoch)
        flow_of_row, is_closed = closed
        in_closed = np.zeros(n, dtype=bool)
        in_closed[rows] = is_closed[flow_of_row]
        ordered = np.flatnonzero(~in_closed)
        arrivals = np.flatnonzero(in_closed & ((kind == SYN) | (kind == DATAGRAM)))
        self._walk(ordered, arrivals, in_closed, epoch, flow_of_row, rows, kind)

    def _closed_flows(self, rows: np.ndarray, kind: np.ndarray,
                      epoch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(flow of each socket-layer row, whether each flow can be closed): see the module."""
        sc, a = self.sc, self.a
        if not len(rows):
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=bool)
        keys = sc.flow_keys(rows + a)
        uniq, flow = np.unique(keys, return_inverse=True)
        self.flow_keys = uniq
        count = len(uniq)
        k = kind[rows]
        arrival = (k == SYN) | (k == DATAGRAM)
        n_arr = np.bincount(flow, weights=arrival, minlength=count)
        n_obs = np.bincount(flow, weights=~arrival, minlength=count)
        udp = np.zeros(count, dtype=bool)
        udp[flow] = k >= DATAGRAM
        ok = (n_arr == n_obs) & (n_arr >= 1) & (udp | (n_arr == 1))  # TCP: one syn per 4-tuple
        ep = epoch[rows]
        low = np.full(count, np.iinfo(np.int64).max)
        high = np.full(count, -1)
        np.minimum.at(low, flow, ep)
        np.maximum.at(high, flow, ep)
        ok &= low == high
        ok[flow[k == RESET]] = False
        ok[flow[arrival & ~sc.decidable[rows + a]]] = False
        order = np.argsort(flow, kind="stable")  # by flow, then row (`rows` ascend)
        delta = np.where(arrival, 1, -1)[order]
        running = np.cumsum(delta)
        starts = np.searchsorted(flow[order], np.arange(count))
        before = running[starts] - delta[starts]
        ok &= np.minimum.reduceat(running, starts) - before >= 0  # no observation before its arrival
        self._not_pending(ok, uniq)
        self._payloads_agree(ok, rows, flow, order, arrival)
        return flow, ok

    def _not_pending(self, ok: np.ndarray, uniq: np.ndarray) -> None:
        conns, datagrams = self.hs.host.pending()
        keys = [key for udp, flows in ((False, conns), (True, datagrams)) for flow in flows
                if (key := self.sc.key_of(udp, flow)) is not None]
        if keys:
            held = np.array(keys, dtype=np.int64)
            at = np.minimum(np.searchsorted(uniq, held), len(uniq) - 1)
            ok[at[uniq[at] == held]] = False

    def _payloads_agree(self, ok: np.ndarray, rows: np.ndarray, flow: np.ndarray,
                        order: np.ndarray, arrival: np.ndarray) -> None:
        """A `recv` that carries its payload must carry its datagram's (in arrival order)."""
        payload = self.sc.batch.column("payload")
        k = self.sc.kind[rows + self.a]
        recv_rows = rows[k == RECV] + self.a
        if not len(recv_rows) or payload.null_count == len(payload):
            return
        if not payload.is_valid().to_numpy(zero_copy_only=False)[recv_rows].any():
            return
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
        dest = sc.laddr[a:b] * 65536 + sc.lport[a:b]
        at = ordered + a
        arriving = ((kind[ordered] == SYN) | (kind[ordered] == DATAGRAM)) & sc.decidable[at]
        queueable = dict(zip(ordered[arriving].tolist(), zip(
            kind[ordered][arriving].tolist(), dest[ordered][arriving].tolist(),
            cols.hash[at][arriving].tolist(), cols.cpu[at][arriving].tolist(),
            cols.seq[at][arriving].tolist())))
        epochs = int(epoch[-1]) + 1
        arrival_bounds = np.searchsorted(epoch[arrivals], np.arange(epochs + 1)).tolist()
        ordered_bounds = np.searchsorted(epoch[ordered], np.arange(epochs + 1)).tolist()
        ordered_list = ordered.tolist()
        arrival_key = (kind[arrivals].astype(np.int64) * (dest.max() + 1 if len(dest) else 1)
                       + dest[arrivals])
        self.route_of = np.full(len(arrivals), -1, dtype=np.int64)
        flows = np.full(len(kind), -1, dtype=np.int64)
        flows[rows] = flow_of_row
        routes: dict[tuple[int, int], int | None] = {}
        kinds = kind.tolist()
        for e in range(epochs):
            todo = ordered_list[ordered_bounds[e]:ordered_bounds[e + 1]]
            if e > 0:  # the route change that opens the epoch
                self._one(todo[0], dicts[todo[0]])
                todo = todo[1:]
            routes.clear()
            lo, hi = arrival_bounds[e], arrival_bounds[e + 1]
            if hi > lo:
                fallback = self._tag(lo, hi, arrivals, arrival_key, kind, dest, flows, routes)
                if fallback:
                    todo = self._fall_back(todo, fallback, flows, in_closed, e, epoch)
            for r in todo:
                k = kinds[r]
                if k == ACCEPT or k == RECV or k == RESET:
                    self._observe(r, k)
                    continue
                values = queueable.get(r)
                if values is not None:
                    k, d, hash, cpu, seq = values
                    route = self._route(routes, k, d, r)
                    if route is not None and self._queue(r, k, self.routes[route], hash, cpu,
                                                         seq):
                        continue
                if k == DATAGRAM and self._deliver(r):
                    continue
                self._one(r, dicts[r])
        self._sync_cpu(b - a)
        self._decide_closed(arrivals, flows, in_closed, kind)

    def _tag(self, lo: int, hi: int, arrivals: np.ndarray, key: np.ndarray, kind: np.ndarray,
             dest: np.ndarray, flows: np.ndarray, routes: dict) -> set[int]:
        """Closed arrivals `lo:hi` of one epoch: the route of each; returns the flows of those
        no route decides."""
        fallback: set[int] = set()
        if hi - lo <= FEW:
            for j in range(lo, hi):
                r = int(arrivals[j])
                route = self._hash_route(routes, int(kind[r]), int(dest[r]), r)
                if route is None:
                    fallback.add(int(flows[r]))
                else:
                    self.route_of[j] = route
            return fallback
        keys, first, inverse = np.unique(key[lo:hi], return_index=True, return_inverse=True)
        found = np.empty(len(keys), dtype=np.int64)
        for u, j in enumerate(first.tolist()):
            r = int(arrivals[lo + j])
            route = self._hash_route(routes, int(kind[r]), int(dest[r]), r)
            found[u] = -1 if route is None else route
        tagged = found[inverse.reshape(-1)]
        self.route_of[lo:hi] = tagged
        if (tagged < 0).any():
            fallback.update(flows[arrivals[lo:hi][tagged < 0]].tolist())
        return fallback

    def _hash_route(self, routes: dict, k: int, dest: int, r: int) -> int | None:
        """`_route` where the hash alone decides (no program): what closed flows need."""
        route = self._route(routes, k, dest, r)
        return None if route is None or self.routes[route].prog is not None else route

    def _route(self, routes: dict, k: int, dest: int, r: int) -> int | None:
        key = (k, dest)
        if key in routes:
            return routes[key]
        sc, i, hs = self.sc, r + self.a, self.hs
        head = hs.host.hash_route(ARRIVAL_EVENT[k], sc.addresses[int(sc.laddr[i])],
                                  int(sc.lport[i]), classic=True)
        index = None
        if head is not None:
            route = self._known_route(head)
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
        key = (id(head), id(reuse), id(reuse.prog), fast.GroupState.of(reuse), label,
               hs.history.mark(label))
        cache = hs.routes
        route = cache.get(key)
        if route is None or route.prog is not reuse.prog:
            if len(cache) >= ROUTE_CACHE:
                cache.clear()
            route = cache[key] = Route(hs, head)
        return route

    def _fall_back(self, todo: list[int], out: set[int], flows: np.ndarray,
                   in_closed: np.ndarray, e: int, epoch: np.ndarray) -> list[int]:
        """Flows whose destination no hash decides in epoch `e`: their rows join `todo`."""
        lo, hi = np.searchsorted(epoch, [e, e + 1]).tolist()
        mine = [r for r, flow, closed in zip(range(lo, hi), flows[lo:hi].tolist(),
                                              in_closed[lo:hi].tolist())
                if closed and flow in out]
        in_closed[mine] = False
        return sorted(todo + mine)

    def _one(self, r: int, row: dict) -> None:
        """Row `r` through the faithful path, the namespace's CPU as the per-row path leaves it."""
        self.ports.clear()  # a row replayed one by one may change any port
        self._sync_cpu(r)
        self.engine.row(self.hs, row, r + self.a)
        self.done = r

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
                     self.sc.payload(r + self.a))
        return True

    def _observe(self, r: int, k: int) -> None:
        """Observation row `r` (relative) as the per-row path takes it: paired by the host's
        pairing; a match is counted without a decision record unless results are kept."""
        self._sync_cpu(r)
        self.done = r
        hs, v, i = self.hs, self.values, r + self.a
        host = hs.host
        seq = v.seq[r]
        host.seq = seq
        flow = v.flow(r)
        sk = v.sk[r] if v.sk_valid[r] else None
        row = {"seq": seq, "event": OBSERVATION_EVENT[k], "laddr": v.laddr_text[r],
               "lport": flow[1], "raddr": v.raddr_text[r], "rport": flow[3], "sk": sk}
        if k == ACCEPT:
            exp, observed = host.accept(sk, *flow), sk
        elif k == RECV:
            exp, observed = host.recv(sk, *flow, self.sc.payload(i), token=row), sk
            if exp.deferred:
                return
        else:
            exp, observed = host.reset(*flow), -1
        pick = exp.pick
        sink = self.engine.sink
        if exp.unknown is None and exp.expected == observed and sink.results is None \
                and pick is not None:
            sink.add_match(i, hs.name, pick.group, pick.reuseport_id, exp.expected,
                           k == RESET)
        else:
            self.engine.decide(hs, row, i, exp, observed)

    def _sync_cpu(self, r: int) -> None:
        """Set the namespace's CPU to that of the last arrival before row `r` (relative) if no
        row replayed since: the closed arrivals in between set it in the per-row path."""
        if self._cpu_rows is None:
            kind = self.sc.kind[self.a:self.b]
            sets = ((kind == SYN) | (kind == DATAGRAM)) & self.cols.cpu_valid[self.a:self.b]
            self._cpu_rows = np.flatnonzero(sets).tolist()
        at = bisect_left(self._cpu_rows, r) - 1
        if at >= 0 and self._cpu_rows[at] > self.done:
            self.hs.host.net.cpu = int(self.cols.cpu[self.a + self._cpu_rows[at]])

    def _queue(self, r: int, k: int, route: Route, hash: int, cpu: int, seq: int) -> bool:
        """An arrival its group decides: queued as `syn` / `datagram` would after their lookup.
        False (nothing done) where the group's classic program's answer is unknown."""
        host, sc, i = self.hs.host, self.sc, r + self.a
        flow = self.values.flow(r)
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
        tables = fast.tabulate([r.state for r in self.routes], int(cols.cpu[arrivals + a].max()))
        expected, answer, start = tables.lookup(route, cols.hash[arrivals + a],
                                                cols.cpu[arrivals + a])
        stride = tables.width + 1
        slot = answer - route * stride
        reason = np.where(tables.by_cpu[route], 2, np.where(slot != start, 1, 0))
        # every arrival of a flow: one socket, one reason, one route
        flow = flows[arrivals]
        uniq_flow, inverse = np.unique(flow, return_inverse=True)
        first = np.zeros(len(uniq_flow), dtype=np.int64)
        first[inverse[::-1]] = np.arange(len(flow))[::-1]
        same = (expected == expected[first][inverse]) & (reason == reason[first][inverse]) \
            & (route == route[first][inverse])
        good = np.ones(len(uniq_flow), dtype=bool)
        good[inverse[~same]] = False
        # every observation names that socket
        observations = np.flatnonzero(in_closed & ((kind == ACCEPT) | (kind == RECV)))
        obs_flow = np.searchsorted(uniq_flow, flows[observations])
        flow_expected = expected[first]
        named = cols.sk[observations + a] == flow_expected[obs_flow]
        good[obs_flow[~named]] = False
        bad_flows = set(uniq_flow[~good].tolist())
        if bad_flows:
            self._late(arrivals, route, flows, in_closed, kind, bad_flows)
        fine = good[obs_flow]
        observations, obs_flow = observations[fine], obs_flow[fine]
        if not len(observations):
            return
        obs_route = route[first][obs_flow]
        self._matches(observations, obs_route, flow_expected[obs_flow],
                      reason[first][obs_flow], kind)

    def _matches(self, rows: np.ndarray, route: np.ndarray, expected: np.ndarray,
                 reason: np.ndarray, kind: np.ndarray) -> None:
        """Observations `rows` (relative) that matched, each on `route` expecting `expected`."""
        sink, host, routes, a = self.engine.sink, self.hs.name, self.routes, self.a
        labels: dict[str, int] = {}
        label_of = np.array([labels.setdefault(r.label, len(labels)) for r in routes],
                            dtype=np.int64)
        names = list(labels)
        lab = label_of[route]
        for li in np.unique(lab).tolist():
            mine = lab == li
            last = int(rows[mine].max())
            last_route = int(route[mine][np.argmax(rows[mine])])
            sink.add_matches(host, names[li], routes[last_route].reuseport_id, None,
                             int(mine.sum()), last + a)
            socks, counts = np.unique(expected[mine], return_counts=True)
            for sk, count in zip(socks.tolist(), counts.tolist()):
                sink.add_load(host, names[li], sk, count)
        if sink.results is None:
            return
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


def _valid(column: pa.Array) -> np.ndarray:
    return column.is_valid().to_numpy(zero_copy_only=False)


def _ints(column: pa.Array) -> np.ndarray:
    if column.null_count == len(column):
        return np.full(len(column), -1, dtype=np.int64)
    return pc.fill_null(column, -1).to_numpy(zero_copy_only=False).astype(np.int64)




def _string(column: pa.Array) -> pa.Array:
    return column.cast(pa.string()) if column.type != pa.string() else column
