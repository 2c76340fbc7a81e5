"""Datagrams to a UDP port that no single group decides (a connected socket on it, a group with
connections), without running the lookup for each: its answer, memoized on what it reads.

`Host.udp_lookup` for a datagram reads the port's sockets and groups (`port_state`), the CPU,
the hash and the packet (through each group's selection: only the socket it picks matters to
the rest of the walk, `udp_rescore` included; a classic program's answer is part of the key, an
eBPF program's port is never memoized), and the datagram's source only where a connected socket
compares it with its peer (`source_matches`). So the answer for one datagram is the answer for
every other with the same state, CPU, picks and matching peers: the socket and the pick, which
is either the group's selection pick for this datagram (its `Route` gives it) or a pick without
a hash (`connected`, `lookup`) that only its `seq` tells apart.

The first datagram of each key runs the lookup itself, and its answer is memoized only if
rebuilding it from the memo gives the same socket and the same pick, or if no socket took the
datagram and no selection ran (a drop with nothing to say but its `seq`); every other answer (a
drop a group decided, an unknown) is never memoized.
"""

from __future__ import annotations

from ipaddress import IPv4Address
from typing import Any, Callable

from tracekit.kernel.bpf import BPF_PROG_TYPE_SK_REUSEPORT
from tracekit.kernel.sock import TCP_ESTABLISHED, Sock
from tracekit.kernel.socket_layer.addresses import ANY, ip_text, parse_ip, v4_view, v6_view
from tracekit.kernel.socket_layer.host import LOOPBACK_IFINDEX, Flow, Host, Socket
from tracekit.kernel.socket_layer.lookup import udp_compute_score
from tracekit.kernel.socket_layer.selection import Pick, new_pick, replace_pick
from tracekit.replay import fast

__all__ = ["PortMemo", "port_state", "source_matches"]

HASH_REASONS = frozenset({"hash", "established-skip", "incoming-cpu", "cbpf"})
FIXED_REASONS = frozenset({"connected", "lookup"})
NO_MEMO = ("no-memo",)
ANY_SOCKET = -4  # (`_picked`: some socket of the group, which one does not matter to the lookup)


def _scanned(host: Host, daddr: Any, lport: int) -> list[Socket]:
    """The sockets `udp_lookup` scores for a datagram to daddr:lport, in its order."""
    return [*host.udp_buckets.get((lport, ip_text(daddr)), ()),
            *host.udp_buckets.get((lport, ANY), ()), *host.udp_primary.get(lport, ())]


def _socket_state(s: Socket, with_cpu: bool) -> tuple:
    sk = s.sk
    return (id(s), sk.sk_id, s.family, s.laddr, s.lport, s.raddr, s.rport, s.v6only,
            s.bound_dev_if, sk.sk_state, sk.sk_incoming_cpu if with_cpu else None,
            sk.sk_reuseport, id(sk.sk_reuseport_cb), sk.hashed)


def _connected(s: Socket) -> bool:
    """A socket with a peer: a datagram delivered to it sets its `sk_incoming_cpu`."""
    return s.raddr is not None or bool(s.rport)


def port_state(host: Host, laddr: str, lport: int
               ) -> tuple[tuple, list[Socket], list, list[Socket], frozenset[int]] | None:
    """What `udp_lookup` reads of the host for a datagram to laddr:lport, but the
    `sk_incoming_cpu` of connected sockets (a datagram delivered to one changes it): a key,
    the connected sockets, one member of each group, the sockets whose score a CPU can raise
    (`udp_compute_score()`'s bonus), and the ids of every socket it read. None where a program
    makes the datagram matter beyond its bytes (an eBPF program)."""
    daddr = parse_ip(laddr)
    scanned = _scanned(host, daddr, lport)
    heads: dict[int, Socket] = {}
    for s in scanned:
        reuse = s.sk.sk_reuseport_cb
        if reuse is not None:
            if reuse.prog is not None and reuse.prog.type == BPF_PROG_TYPE_SK_REUSEPORT:
                return None
            heads.setdefault(id(reuse), s)
    sockets = {id(s): s for s in scanned}
    groups = []
    for head in heads.values():
        reuse = head.sk.sk_reuseport_cb
        members = reuse.live()
        peers = []
        for m in members:  # the rescore reads the chosen member's own socket
            owner = host.socks.get(m.sk_id)
            if owner is None:
                return None
            sockets.setdefault(id(owner), owner)
            peers.append(_connected(owner))
        groups.append((id(reuse), reuse.reuseport_id, reuse.num_socks, reuse.num_closed_socks,
                       tuple([(m.sk_id, m.sk_state, None if peer else m.sk_incoming_cpu)
                              for m, peer in zip(members, peers)]),
                       tuple([m.sk_id for m in reuse.closed()]), reuse.incoming_cpu,
                       reuse.has_conns, host.label_of(reuse), id(reuse.prog)))
    # each id's socket now, and its label: a pick of a socket outside any group is labelled
    # with the bind of the host's socket of its id (`Host._label_pick`), wherever that is
    ids = {s.sk.sk_id for s in sockets.values()}
    owners = tuple([(sk_id, id(owner), owner.label if owner is not None else None)
                    for sk_id in sorted(ids)
                    for owner in (host.socks.get(sk_id),)])
    for head in heads.values():
        ids.update([m.sk_id for m in head.sk.sk_reuseport_cb.closed()])  # type: ignore[union-attr]
    key = (laddr, lport, host.bound, host.labelled, tuple(id(s) for s in scanned),
           tuple(_socket_state(s, not _connected(s)) for s in sockets.values()), tuple(groups),
           owners)
    connected = [s for s in sockets.values() if _connected(s)]
    # the sockets whose `sk_incoming_cpu` can equal a datagram's CPU (a score's bonus)
    bonus = [s for s in sockets.values() if _connected(s) or s.sk.sk_incoming_cpu >= 0]
    return key, connected, list(heads.values()), bonus, frozenset(ids)


def source_matches(s: Socket, saddr: Any, sport: int, v4: bool) -> bool:
    """The clauses of `udp_compute_score()` that read the datagram's source: a connected socket
    scores only the datagrams of its peer."""
    if s.raddr is not None:
        if v4:
            if v4_view(4, s.raddr) != saddr:
                return False
        elif v6_view(6, s.raddr) != v6_view(6, saddr):
            return False
    return not s.rport or s.rport == sport


class PortMemo:
    """The memoized answers of one port in one state (`port_state`)."""

    def __init__(self, laddr: str, lport: int, connected: list[Socket], routes: list[Any],
                 bonus: list[Socket], exact: list[Socket], state: tuple = (),
                 heads: list[Socket] | None = None, ids: frozenset[int] = frozenset()) -> None:
        self.state = state  # the `port_state` key it answers for
        self.ids = ids  # the ids of the sockets that state read
        self.daddr = daddr = parse_ip(laddr)
        self.v4 = isinstance(daddr, IPv4Address)
        self.connected = connected
        self.lport = lport
        # the connected sockets `udp_lookup()` may return at once, the datagram's 4-tuple
        # theirs (`udp4_lib_lookup4()`): ESTABLISHED with a peer address, in the exact bucket
        self.exact4 = [s for s in exact if s.sk.sk_state == TCP_ESTABLISHED and s.raddr is not None]
        # the connected sockets in a group: their `sk_incoming_cpu` is part of its selection
        # (the pick's snapshot, an `incoming_cpu` group's choice), so the group's route is the
        # one for their CPUs now (`routes_now`); of the others only whether it earns a
        # datagram's CPU the bonus matters
        self.grouped = [s for s in connected if s.sk.sk_reuseport_cb is not None]
        # a source port no connected socket's peer has: every such one scores alike
        self.rports = frozenset([s.rport for s in connected if s.rport])
        # the CPUs of the other sockets that earn a bonus: fixed in this state
        self.cpus = frozenset([s.sk.sk_incoming_cpu for s in bonus if not _connected(s)])
        self.routes = routes  # a `Route` per group (None: an empty group)
        self.heads = heads if heads is not None else []  # a member of each group
        # the routes for each CPUs of `grouped` met (the first: `routes`)
        self.by_cpus: dict[tuple, list[Any]] = {self._grouped_cpus(): routes}
        # a group with connections: its pick's own score can decide (`udp_rescore`)
        self.rescored = [route is not None and route.reuse.has_conns for route in routes]
        self.one = len(routes) == 1
        self.answers: dict[tuple, tuple] = {}
        # by source: `source_matches` of each connected socket, the sockets it matches, and
        # the index in `exact4` of the one `udp4_lib_lookup4()` returns (None: none)
        self.sources: dict[tuple[str, int], tuple[tuple[bool, ...], list[Socket],
                                                  int | None]] = {}

    def _grouped_cpus(self) -> tuple:
        return tuple([s.sk.sk_incoming_cpu for s in self.grouped])

    def routes_now(self, route_of: Callable[[Socket], Any]) -> list[Any]:
        """The groups' routes as the groups are now: those for the CPUs of the connected
        sockets in them now (the rest of each group is the memo's state)."""
        if not self.grouped:
            return self.routes
        cpus = self._grouped_cpus()
        routes = self.by_cpus.get(cpus)
        if routes is None:
            if len(self.by_cpus) >= 64:
                self.by_cpus.clear()
            routes = self.by_cpus[cpus] = [
                route_of(h) if route is not None else None
                for h, route in zip(self.heads, self.routes)]
        return routes

    def key(self, flow: Flow, hash: int | None, cpu: int, payload: bytes | None,
            routes: list[Any]) -> tuple:
        """What of this datagram the lookup's answer depends on, the groups' `routes` as they
        are now (`routes_now`): whether its source is each connected socket's peer, which of
        its peers the CPU earns a score bonus (a connected socket whose peer it is not scores
        nothing), what each group picks (`_picked`), whether the CPU earns any other socket
        the bonus. Not the CPUs of the connected sockets in groups: they change only what a
        group picks, which `_picked` tells, and the pick's record, which the route rebuilds.
        Where a connected socket takes the datagram by its 4-tuple (`udp4_lib_lookup4()`),
        only which one: `(index in exact4,)`."""
        if self.connected:  # (their peers are part of the port's state: kept with the memo)
            sport = flow[3]
            source = (flow[2], sport if sport in self.rports else -1)
            known = self.sources.get(source)
            if known is None:
                known = self.sources[source] = self._source(flow[2], sport)
            matches, peers, first4 = known
            if first4 is not None:
                return (first4,)
            raised = tuple([s.sk.sk_incoming_cpu == cpu for s in peers]) if peers else ()
        else:
            matches = raised = ()
        if self.one:
            picked = _picked(routes[0], flow, hash, cpu, payload, self.rescored[0])
        else:
            picked = tuple([_picked(route, flow, hash, cpu, payload, rescored)
                            for route, rescored in zip(routes, self.rescored)])
        return matches, raised, picked, cpu if cpu in self.cpus else -1

    def _source(self, saddr_text: str, sport: int
                ) -> tuple[tuple[bool, ...], list[Socket], int | None]:
        """What the lookup reads of a datagram's source: whether it is each connected socket's
        peer, those whose peer it is, and which socket of `exact4` the 4-tuple lookup returns
        (the first that `udp_compute_score()` without a CPU scores), if any."""
        saddr = parse_ip(saddr_text)
        for i, s in enumerate(self.exact4):
            if udp_compute_score(s, saddr, sport, self.daddr, self.lport, LOOPBACK_IFINDEX,
                                 None) >= 0:
                return (), [], i  # (the rest is not read)
        matches = tuple([source_matches(s, saddr, sport, self.v4) for s in self.connected])
        return matches, [s for s, match in zip(self.connected, matches) if match], None

    def deliver(self, host: Host, flow: Flow, hash: int | None, cpu: int, seq: int,
                payload: bytes | None, route_of: Callable[[Socket], Any]) -> None:
        """`Host.datagram` for this datagram, with `host.seq` and `host.net.cpu` set
        (`route_of`: the route through a group's member as the group is now)."""
        routes = self.routes_now(route_of) if self.grouped else self.routes
        key = self.key(flow, hash, cpu, payload, routes)
        answer = self.answers.get(key)
        if answer is not None and answer is not NO_MEMO:
            kind, value = answer
            if kind == "dropped":
                host.place_datagram(flow, None, None, cpu, payload)
                return
            pick = (_rebuilt(routes[value], flow, hash, cpu, seq, payload)
                    if kind == "group" else replace_pick(value, seq=seq))
            host.queue_datagram(flow, host.socks[pick.sk], pick, cpu, payload)
            return
        if len(key) == 1:  # what `udp_lookup()` returns from `udp4_lib_lookup4()`
            s = self.exact4[key[0]]
            placed = host.place_datagram(flow, s.sk, new_pick(s.sk.sk_id, "connected"), cpu,
                                         payload)
            self.answers[key] = ("fixed", placed)
            return
        chosen, pick = host.udp_lookup(flow, hash, cpu, payload)
        placed = host.place_datagram(flow, chosen, pick, cpu, payload)
        if answer is None:
            self.answers[key] = self._answer(chosen, pick, placed, routes, flow, hash, cpu, seq,
                                             payload)

    def _answer(self, chosen: Any, found: Pick | None, placed: Pick, routes: list[Any],
                flow: Flow, hash: int | None, cpu: int, seq: int,
                payload: bytes | None) -> tuple:
        """How to rebuild `placed` for another datagram of the same key, if it can be (`found`:
        the lookup's own pick; `routes`: the groups' routes when it was found)."""
        if chosen is None and found is None:  # no socket scored: dropped, by nobody's choice
            return ("dropped", None)
        if not isinstance(chosen, Sock) or placed.sk != chosen.sk_id:
            return NO_MEMO
        if placed.reason in FIXED_REASONS and placed.hash is None:
            return ("fixed", placed)
        if placed.reason in HASH_REASONS and (hash is not None or placed.reason == "cbpf"):
            for g, route in enumerate(routes):
                if route is not None and route.reuseport_id == placed.reuseport_id \
                        and route.slot_of.get(placed.sk) is not None \
                        and _rebuilt(route, flow, hash, cpu, seq, payload) == placed:
                    return ("group", g)
        return NO_MEMO


def _picked(route: Any, flow: Flow, hash: int | None, cpu: int, payload: bytes | None,
            rescored: bool) -> Any:
    """What of one group's selection the lookup's answer depends on: whether a classic
    program's index names a socket, else whether the hash picks one; and which socket, where
    the group has connections (`rescored`: the lookup scores the pick itself). Without
    connections `udp_lookup2()` returns whatever socket the group picks, so which one it is
    changes only the pick, and the memo rebuilds that for each datagram (`_rebuilt`)."""
    if route is None:
        return -2  # an empty group selects nothing
    if route.prog is not None:
        index = route.cbpf_index(flow, payload, cpu)
        if index is None or index < route.n:
            return ("cbpf", index if rescored or index is None else ANY_SOCKET)
    if hash is None:
        return -3
    chosen = route.chosen(hash, cpu)
    return chosen if rescored or chosen == fast.NO_SOCKET else ANY_SOCKET


def _rebuilt(route: Any, flow: Flow, hash: int | None, cpu: int, seq: int,
             payload: bytes | None) -> Pick:
    """The group's selection pick for this datagram, as `select_traced` and `_label_pick`
    give it."""
    if route.prog is not None:
        return route.classic_pick(hash, cpu, seq, flow, payload)
    return route.pick(hash, cpu, seq)


def memo_of(cache: dict, host: Host, laddr: str, lport: int,
            route_of: Callable[[Socket], Any]) -> PortMemo | None:
    """The port's memo in its current state (`cache`: the host's, kept across stretches)."""
    state = port_state(host, laddr, lport)
    if state is None:
        return None
    key, connected, heads, bonus, ids = state
    memo = cache.get(key)
    if memo is None:
        if len(cache) >= 1024:
            cache.clear()
        routes = [route_of(h) if h.sk.sk_reuseport_cb.num_socks else None  # type: ignore[union-attr]
                  for h in heads]
        if any(route is not None and route.ambiguous for route in routes):
            return None  # two sockets of one id in a group: an id does not tell their slots
        exact = host.udp_buckets.get((lport, ip_text(parse_ip(laddr))), [])
        memo = cache[key] = PortMemo(laddr, lport, connected, routes, bonus, exact, key, heads,
                                     ids)
    return memo
