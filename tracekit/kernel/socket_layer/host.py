"""One host (network namespace) as the socket layer sees it: sockets, the listen and UDP hash
buckets in the kernel's order, accept queues, connections and datagrams in flight.

Each socket-layer event of the trace format is a method named after the event; each mirrors the
kernel path that reaches `sock_reuseport.c` (cited per method). Observations (`accept`, `recv`,
`reset`) return what the model expected; the model then follows what was observed, so one wrong
prediction is reported once.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field, fields
from functools import lru_cache
from itertools import islice
from typing import Callable, NamedTuple

from tracekit.errors import StoryError
from tracekit.kernel import cbpf
from tracekit.kernel.bpf import (
    BPF_SK_REUSEPORT_SELECT,
    BPF_SK_REUSEPORT_SELECT_OR_MIGRATE,
    BpfProg,
    ErrPtr,
    _Unknown,
)
from tracekit.kernel.net import Net
from tracekit.kernel.packet import loopback_skb
from tracekit.kernel.sock import (
    IPPROTO_TCP,
    IPPROTO_UDP,
    PROTOCOLS,
    TCP_CLOSE,
    TCP_ESTABLISHED,
    TCP_LISTEN,
    Sock,
)
from tracekit.kernel.sock_reuseport import (
    SockReuseport,
    reuseport_add_sock,
    reuseport_alloc,
    reuseport_attach_prog,
    reuseport_detach_prog,
    reuseport_detach_sock,
    reuseport_has_conns_set,
    reuseport_stop_listen_sock,
    reuseport_update_incoming_cpu,
)
from tracekit.kernel.socket_layer.addresses import (
    IP,
    bucket_key,
    format_endpoint,
    normal_ip,
    parse_ip,
    rcv_saddr_any,
    route_source,
)
from tracekit.kernel.socket_layer.lookup import (
    tcp_hash_route,
    tcp_lookup_listener,
    udp_hash_route,
    udp_lookup,
)
from tracekit.kernel.socket_layer.selection import (
    Pick,
    migrate_queue_traced,
    migrate_traced,
    replace_pick,
)
from tracekit.kernel.socket_layer.pairing import UNPLACED, Pairing

LOOPBACK_IFINDEX = 1
MIGRATE_IN_BULK = True
"""Decide a stopping listener's queue at once (`migrate_queue_traced`); False: child by child
(`migrate_traced`), the faithful path the tests compare against."""
SHUT_RD, SHUT_WR, SHUT_RDWR = 0, 1, 2

Flow = tuple[str, int, str, int]
"""(laddr, lport, raddr, rport) from the listener's point of view, addresses normalized."""


@dataclass(eq=False)
class Socket:
    """The socket-layer state around a `Sock`: what binding, listening and connecting set."""

    sk: Sock
    proto: str
    family: int
    laddr: IP | None = None
    lport: int | None = None
    raddr: IP | None = None
    rport: int = 0
    v6only: bool = False
    bound_dev_if: int = 0
    listening: bool = False
    closed: bool = False
    accept_queue: deque[Conn] = field(default_factory=deque)

    @property
    def label(self) -> str:
        """The group label of this socket's bind: `tcp 127.0.0.1:8080`, `udp [::]:53`."""
        bind = (self.proto, self.laddr, self.lport, self.bound_dev_if, self.v6only)
        # kept with the bind it names (an address hashes slowly, and labels are read often)
        last = self.__dict__.get("_label")
        if last is None or last[0] != bind:
            last = self.__dict__["_label"] = (bind, _label(*bind))
        return last[1]


@lru_cache(maxsize=1 << 12)
def _label(proto: str, laddr: IP | None, lport: int | None, bound_dev_if: int,
           v6only: bool) -> str:
    text = f"{proto} {format_endpoint(laddr, lport)}"
    if bound_dev_if:
        text += f" dev {bound_dev_if}"
    if v6only:
        text += " v6only"
    return text


@dataclass(eq=False)
class Conn:
    """A connection request: queued on a listener, reset, or somewhere the model cannot tell."""

    flow: Flow
    hash: int | None
    pick: Pick
    listener: Socket | None = None


class Expectation(NamedTuple):
    """What the model expected of an observation: a socket id, -1 for none, or unknown. (A
    named tuple: every observation makes one.)"""

    expected: int
    pick: Pick | None
    unknown: str | None = None
    deferred: bool = False  # a `recv` decided at the end (`Host.settle`)


_expectation = tuple.__new__  # (`_expectation(Expectation, (expected, pick, unknown, deferred))`)
DEFERRED_EXPECTATION = Expectation(-1, None, deferred=True)
LOST_EVENTS = Expectation(-1, None, "lost-events")


class Migration(NamedTuple):
    """One queued connection of a stopped listener: migrated to `to` or reset (-1) or unknown.
    (A tuple: a stopping listener can have thousands.)"""

    listener: int
    flow: Flow
    to: int
    unknown: str | None
    group: str | None


# what `Host.park` keeps of a socket: every field but the references it checks are empty
_SOCK_VALUES = tuple(f.name for f in fields(Sock) if f.name not in ("sk_net", "sk_reuseport_cb"))
_SOCKET_VALUES = tuple(f.name for f in fields(Socket) if f.name not in ("sk", "accept_queue"))


def flow_of(laddr: str, lport: int, raddr: str, rport: int) -> Flow:
    return (normal_ip(laddr), int(lport), normal_ip(raddr), int(rport))


class Host:
    """A network namespace: the model's state for one trace host."""

    def __init__(self, net: Net | None = None) -> None:
        self.net = net if net is not None else Net()
        self.seq: int | None = None
        self.socks: dict[int, Socket] = {}
        self.tcp_buckets: dict[tuple[int, str], list[Socket]] = {}
        self.udp_buckets: dict[tuple[int, str], list[Socket]] = {}
        self.udp_primary: dict[int, list[Socket]] = {}
        self.conns: dict[Flow, Conn] = {}
        self.datagrams = Pairing()  # datagrams waiting for the `recv` that observes them
        self.migrations: list[Migration] = []
        # the migrations of one stopping listener, in queue order, as `inet_csk_listen_stop()`
        # makes them: all between `reuseport_stop_listen_sock()` and what follows the stop
        self.on_migrations: Callable[[list[Migration]], None] | None = None
        self.bound = False  # some socket has bound: group labels come from binds
        self.parked: dict[int, tuple] = {}  # departed sockets as plain values (`park`)
        self.departing: set[int] = set()  # sockets that left a group since the last `park`
        # kernel layer: sockets whose group the trace never saw built (see kernel_calls.py)
        self.membership_unknown: set[int] = set()
        self.labelled = False  # kernel-layer rows named some socket's address: labels from it

    # -- sockets ----------------------------------------------------------------------------------
    def sock(self, sk_id: int, proto: str | None = None) -> Socket:
        """The socket with this trace id; kernel-layer traces create sockets on first use."""
        s = self.socks.get(sk_id)
        if s is None:
            if sk_id in self.parked:
                return self._unpark(sk_id)
            proto = proto or "tcp"
            s = Socket(Sock(sk_id, self.net, sk_protocol=PROTOCOLS[proto]), proto, 4)
            self.socks[sk_id] = s
        return s

    def kernel_sock(self, sk_id: int, proto: str | None = None, *, joins: bool = False) -> Socket:
        """`sock()` for a kernel-layer event: a socket met first by an event other than its own
        joining of a group (`joins`) has a group membership the trace never established."""
        if not joins and sk_id not in self.socks and sk_id not in self.parked:
            self.membership_unknown.add(sk_id)
        return self.sock(sk_id, proto)

    def socket(self, sk: int, proto: str, family: int) -> None:
        self.parked.pop(sk, None)
        self.socks[sk] = Socket(Sock(sk, self.net, sk_protocol=PROTOCOLS[proto]), proto, int(family))

    def park(self) -> None:
        """Keep the sockets that left a group (`departing`) as plain values while nothing can
        reach them but their id: out of every group, unhashed, not listening, nothing queued, on a
        host where nothing ever bound (so no bucket, queue or connection holds them). `sock()`
        rebuilds one exactly as it was. A long kernel-layer trace leaves a departed socket behind
        every few events; as objects they would make every full garbage collection slower."""
        departing, self.departing = self.departing, set()
        if self.bound:
            return
        for sk_id in departing:
            s = self.socks.get(sk_id)
            if s is None or s.listening or s.accept_queue:
                continue
            sk = s.sk
            if sk.sk_reuseport_cb is not None or sk.hashed or sk.sk_net is not self.net:
                continue
            del self.socks[sk_id]
            self.parked[sk_id] = (tuple([getattr(sk, name) for name in _SOCK_VALUES]),
                                  tuple([getattr(s, name) for name in _SOCKET_VALUES]))

    def _unpark(self, sk_id: int) -> Socket:
        sk_values, socket_values = self.parked.pop(sk_id)
        sk = Sock(sk_net=self.net, **dict(zip(_SOCK_VALUES, sk_values)))
        s = self.socks[sk_id] = Socket(sk, **dict(zip(_SOCKET_VALUES, socket_values)))
        return s

    def label_of(self, reuse: SockReuseport | None) -> str | None:
        """The group's label, from a member's bind (kernel-layer traces: `group <reuseport_id>`)."""
        if reuse is None:
            return None
        if not (self.bound or self.labelled):  # kernel-layer traces without addresses
            return f"group {reuse.reuseport_id}"
        socks = self.socks
        if reuse.num_socks:  # (most often the first live member names it)
            s = socks.get(reuse.socks[0].sk_id)  # type: ignore[union-attr]
            if s is not None and s.lport is not None:
                return s.label
        for section in (islice(reuse.socks, reuse.num_socks), reuse.closed()):
            for member in section:
                s = socks.get(member.sk_id) if member is not None else None
                if s is not None and s.lport is not None:
                    return s.label
        return f"group {reuse.reuseport_id}"

    def groups(self) -> list[SockReuseport]:
        """Every group some socket of this host belongs to, in order of first member id."""
        seen: dict[int, SockReuseport] = {}
        for sk_id in sorted(self.socks):
            reuse = self.socks[sk_id].sk.sk_reuseport_cb
            if reuse is not None and id(reuse) not in seen:
                seen[id(reuse)] = reuse
        return list(seen.values())

    def _label_pick(self, pick: Pick, sk: Sock | None) -> Pick:
        reuse = sk.sk_reuseport_cb if sk is not None else None
        if pick.group is not None:
            return pick
        if reuse is None and sk is not None:
            owner = self.socks.get(sk.sk_id)
            return replace_pick(pick, group=owner.label if owner is not None else None,
                                seq=self.seq)
        return replace_pick(pick, group=self.label_of(reuse), seq=self.seq)

    def _unknown_pick(self, pick: Pick) -> Pick:
        """A selection the model cannot decide still happened in a known group: name it."""
        pick = replace_pick(pick, unknown=pick.unknown or "no-hash", seq=self.seq)
        if pick.socks and pick.socks[0] in self.socks:
            return self._label_pick(pick, self.socks[pick.socks[0]].sk)
        return pick

    # -- options ----------------------------------------------------------------------------------
    def setsockopt(self, sk: int, name: str, value: int | None, prog: bytes | None,
                   ret: int | None) -> None:
        """net/core/sock.c `sk_setsockopt()` and net/ipv6/ipv6_sockglue.c for IPV6_V6ONLY.

        SO_ATTACH_REUSEPORT_EBPF names its program in `prog` (the UTF-8 bytes of the name a policy
        is registered under); `value` 40 (BPF_SK_REUSEPORT_SELECT_OR_MIGRATE) makes it
        migration-capable.
        """
        if ret:
            return
        s = self.sock(sk)
        if name == "SO_REUSEPORT":
            s.sk.sk_reuseport = bool(value)
        elif name == "SO_ATTACH_REUSEPORT_CBPF":
            # sk_reuseport_attach_filter(): __get_filter() checks the program first
            bpf = classic_prog(prog, ret)
            if bpf is not None:
                reuseport_attach_prog(s.sk, bpf)
        elif name == "SO_ATTACH_REUSEPORT_EBPF":
            reuseport_attach_prog(s.sk, ebpf_prog(prog, value))
        elif name == "SO_DETACH_REUSEPORT_BPF":
            reuseport_detach_prog(s.sk)
        elif name == "SO_INCOMING_CPU":
            reuseport_update_incoming_cpu(s.sk, int(value if value is not None else -1))
        elif name == "IPV6_V6ONLY":
            s.v6only = bool(value)
        elif name == "SO_BINDTODEVICE":
            s.bound_dev_if = int(value or 0)

    def sysctl(self, name: str, value: int) -> None:
        if name in ("net.ipv4.tcp_migrate_req", "net/ipv4/tcp_migrate_req"):
            self.net.sysctl_tcp_migrate_req = int(value)

    # -- bind / listen / connect ------------------------------------------------------------------
    def bind(self, sk: int, laddr: str, lport: int, ret: int | None) -> None:
        """inet_bind(); for UDP `udp_lib_get_port()` joins the group (`udp_reuseport_add_sock()`)."""
        if ret:
            return
        s = self.sock(sk)
        s.laddr, s.lport = parse_ip(laddr), int(lport)
        self.bound = True
        if s.proto == "udp" and s.lport:
            self._udp_hash(s)

    def _udp_hash(self, s: Socket) -> None:
        """`udp_lib_get_port()`: join a group, then `sk_add_node_rcu()` into the primary slot and
        the secondary (port, address) slot, both with the IPv6-reuseport-at-the-tail rule."""
        primary = self.udp_primary.setdefault(s.lport, [])
        if s.sk.sk_reuseport:
            if self._udp_reuseport_add_sock(s, primary):
                return
        self._sk_add_node_rcu(primary, s)
        self._bucket_add(self.udp_buckets, s)
        s.sk.hashed = True

    def _udp_reuseport_add_sock(self, s: Socket, primary: list[Socket]) -> int:
        """net/ipv4/udp.c `udp_reuseport_add_sock()`: join the first matching socket of the port's
        primary slot. A connected socket has left its group (`udp_lib_hash4()`) but is still in
        the slot, so when it comes first the kernel makes it a new group with the newcomer. It
        comes first for IPv4 when it is the newest match; for IPv6, whose reuseport sockets sit
        at the tail, when it is the oldest."""
        for s2 in primary:
            if s2 is not s and self._same_group_key(s, s2):
                return reuseport_add_sock(s.sk, s2.sk, rcv_saddr_any(s.laddr))
        return reuseport_alloc(s.sk, rcv_saddr_any(s.laddr))

    @staticmethod
    def _same_group_key(s: Socket, s2: Socket) -> bool:
        # family, ipv6_only, bound device, port, sk_reuseport, uid (one per trace), and
        # inet_rcv_saddr_equal(sk, sk2, false): the same address, wildcards only equal wildcards
        return (s2.family == s.family and s2.v6only == s.v6only
                and s2.bound_dev_if == s.bound_dev_if and s2.lport == s.lport
                and s2.sk.sk_reuseport and s2.laddr == s.laddr)

    @classmethod
    def _bucket_add(cls, buckets: dict, s: Socket) -> None:
        cls._sk_add_node_rcu(buckets.setdefault((s.lport, bucket_key(s.laddr)), []), s)

    @staticmethod
    def _sk_add_node_rcu(chain: list[Socket], s: Socket) -> None:
        # include/net/sock.h `sk_add_node_rcu()`, and the same rule in `__inet_hash()` and for
        # udp_lib_get_port()'s hslot2: IPv6 reuseport sockets go to the tail so that IPv4 ones
        # (which score higher for IPv4 packets) are found first; everything else to the head
        if s.sk.sk_reuseport and s.family == 6:
            chain.append(s)
        else:
            chain.insert(0, s)

    @staticmethod
    def _bucket_remove(buckets: dict, s: Socket) -> None:
        if s.laddr is None:  # hashed by a kernel-layer event, never bound: in no bucket
            return
        bucket = buckets.get((s.lport, bucket_key(s.laddr)), [])
        if s in bucket:
            bucket.remove(s)

    def listen(self, sk: int, ret: int | None) -> None:
        """inet_csk_listen_start() -> `__inet_hash()` -> `inet_reuseport_add_sock()`.

        inet_listen() refuses a socket that is not SOCK_STREAM (-EINVAL): a UDP socket never
        listens, and a trace that says one did is refused."""
        if ret:
            return
        s = self.sock(sk)
        if s.proto != "tcp":
            if ret == 0:
                raise StoryError(f"listen on sk {sk}, a {s.proto} socket, reported as done (ret 0); "
                                 "inet_listen() refuses every socket but SOCK_STREAM", "ret")
            return
        if s.listening or s.lport is None:
            return
        s.sk.sk_state = TCP_LISTEN
        if s.sk.sk_reuseport:
            err = self._inet_reuseport_add_sock(s)
            if err:
                s.sk.sk_state = TCP_CLOSE
                return
        self._bucket_add(self.tcp_buckets, s)
        s.sk.hashed = True
        s.listening = True

    def _inet_reuseport_add_sock(self, s: Socket) -> int:
        bucket = self.tcp_buckets.get((s.lport, bucket_key(s.laddr)), [])
        for s2 in bucket:
            if s2 is not s and self._same_group_key(s, s2):
                return reuseport_add_sock(s.sk, s2.sk, rcv_saddr_any(s.laddr))
        return reuseport_alloc(s.sk, rcv_saddr_any(s.laddr))

    def connect(self, sk: int, raddr: str, rport: int, ret: int | None = None) -> None:
        """UDP `__ip4_datagram_connect()` / `__ip6_datagram_connect()`.

        A wildcard-bound socket takes the route's source address and is rehashed
        (`udp_lib_rehash()`), which detaches it from its group; then `reuseport_has_conns_set()`
        and TCP_ESTABLISHED, so hash selection skips it. From 6.13 the connected socket enters the
        4-tuple hash (`udp_lib_hash4()`), which detaches it from its group too.
        """
        if ret:
            return
        s = self.sock(sk)
        if s.proto != "udp":
            return
        dest = parse_ip(raddr)
        if s.laddr is not None and s.lport and s.laddr.is_unspecified:
            self._bucket_remove(self.udp_buckets, s)
            if s.sk.sk_reuseport_cb is not None:
                reuseport_detach_sock(s.sk)
            s.laddr = route_source(dest, s.family)
            self.udp_buckets.setdefault((s.lport, bucket_key(s.laddr)), []).insert(0, s)
        s.raddr, s.rport = dest, int(rport)
        reuseport_has_conns_set(s.sk)
        s.sk.sk_state = TCP_ESTABLISHED
        if self.net.profile.udp_hash4 and s.sk.sk_reuseport_cb is not None:
            # udp4_hash4() / udp6_hash4() -> udp_lib_hash4(): a socket in the 4-tuple hash
            # leaves its group (the recorder sees this on 6.18: story-udp-connected)
            reuseport_detach_sock(s.sk)

    # -- shutdown / close -------------------------------------------------------------------------
    def shutdown(self, sk: int, how: int | None, cpu: int | None) -> None:
        """inet_shutdown(): SHUT_RD / SHUT_RDWR on a listener -> tcp_disconnect(), which stops it."""
        s = self.sock(sk)
        if s.listening and how in (SHUT_RD, SHUT_RDWR, None):
            self._set_cpu(cpu)
            self._listen_stop(s)

    def close(self, sk: int, cpu: int | None) -> None:
        """tcp_close() / udp_lib_close(), then sk_destruct() -> `reuseport_detach_sock()`."""
        s = self.sock(sk)
        self._set_cpu(cpu)
        if s.listening:
            self._listen_stop(s)
        elif s.proto == "udp" and s.sk.hashed:
            # udp_lib_unhash()
            if s.sk.sk_reuseport_cb is not None:
                reuseport_detach_sock(s.sk)
            self._bucket_remove(self.udp_buckets, s)
            primary = self.udp_primary.get(s.lport, [])
            if s in primary:
                primary.remove(s)
            s.sk.hashed = False
        if s.sk.sk_reuseport_cb is not None:
            reuseport_detach_sock(s.sk)
        s.closed = True
        s.sk.sk_state = TCP_CLOSE

    def _set_cpu(self, cpu: int | None) -> None:
        if cpu is not None:
            self.net.cpu = int(cpu)

    def _listen_stop(self, s: Socket) -> None:
        """tcp_set_state(TCP_CLOSE) -> `inet_unhash()` -> `reuseport_stop_listen_sock()`, then
        `inet_csk_listen_stop()` migrates each queued child in queue order or resets it."""
        group = self.label_of(s.sk.sk_reuseport_cb) or s.label
        s.sk.sk_state = TCP_CLOSE
        if s.sk.sk_reuseport_cb is not None:
            reuseport_stop_listen_sock(s.sk)
        self._bucket_remove(self.tcp_buckets, s)
        s.sk.hashed = False
        s.listening = False
        queue, s.accept_queue = s.accept_queue, deque()
        if not queue:
            return
        label = {"group": group, "seq": self.seq,
                 "migrated_from": (s.sk.sk_id, self.seq, self.net.cpu)}
        hashes = [conn.hash for conn in queue]
        migrated = (migrate_queue_traced(s.sk, self._child, hashes, **label) if MIGRATE_IN_BULK
                    else ((nsk, replace_pick(pick, **label)) for nsk, pick
                          in (migrate_traced(s.sk, self._child(), hash) for hash in hashes)))
        listener, socks = s.sk.sk_id, self.socks
        done: list[Migration] = []
        add, migration = done.append, tuple.__new__  # (`Migration(...)`, without its `__new__`)
        succeeded = 0
        for conn, (nsk, pick) in zip(queue, migrated):
            conn.pick = pick
            if isinstance(nsk, Sock):
                succeeded += 1
                target = conn.listener = socks[nsk.sk_id]
                target.accept_queue.append(conn)
                add(migration(Migration, (listener, conn.flow, nsk.sk_id, None, group)))
            else:  # unknown, or no listener took it (the pick says sk -1): the kernel resets it
                conn.listener = None
                unknown = (pick.unknown or "no-hash") if isinstance(nsk, _Unknown) else None
                add(migration(Migration, (listener, conn.flow, -1, unknown, group)))
        if succeeded:  # (inet_csk_listen_stop() counts each child it moved)
            self.net.mib["TCPMigrateReqSuccess"] += succeeded
        self.migrations.extend(done)
        if self.on_migrations is not None:
            self.on_migrations(done)

    def _child(self) -> Sock:
        """The child socket of a queued request that `reuseport_migrate_sock()` migrates."""
        return Sock(-1, self.net, sk_protocol=IPPROTO_TCP, sk_state=TCP_ESTABLISHED)

    # -- arrivals ---------------------------------------------------------------------------------
    def syn(self, laddr: str, lport: int, raddr: str, rport: int, hash: int | None,
            cpu: int | None, payload: bytes | None, sk_hash: int | None = None) -> Pick:
        """tcp_v4_rcv() / tcp_v6_rcv() -> listener lookup; the request queues on the chosen
        listener, and migration picks its new listener by the child's `sk_hash`
        (`sk_ehashfn()` of the real 4-tuple).

        For a listener bound to the flow's destination that is the selection hash. A wildcard
        listener is found by `inet_lhash2_lookup()` with INADDR_ANY / in6addr_any as the
        destination, so its selection hash is not the child's: the trace's `sk_hash` column
        carries it, and without it a migration from such a listener is unknown."""
        self._set_cpu(cpu)
        flow = flow_of(laddr, lport, raddr, rport)
        daddr = parse_ip(flow[0])
        skb = loopback_skb(IPPROTO_TCP, parse_ip(flow[2]), flow[3], daddr, flow[1], payload, cpu)
        chosen, pick = tcp_lookup_listener(self.tcp_buckets, daddr, flow[1], LOOPBACK_IFINDEX, cpu,
                                           hash, skb)
        if isinstance(chosen, Sock):
            return self.queue_syn(flow, hash, sk_hash, self.socks[chosen.sk_id],
                                  self._label_pick(pick, chosen))
        conn = Conn(flow, hash, Pick(sk=-1, reason="no-listener"))
        if isinstance(chosen, _Unknown):
            conn.pick = self._unknown_pick(pick)
        elif pick is not None:
            conn.pick = replace_pick(pick, sk=-1, dropped=True, seq=self.seq)
        self.conns[flow] = conn
        return conn.pick

    def queue_syn(self, flow: Flow, hash: int | None, sk_hash: int | None, listener: Socket,
                  pick: Pick) -> Pick:
        """The request of `flow` queues on `listener`, which the lookup chose (`pick`, labelled).
        A wildcard listener's queued request migrates by the connection's own hash, `sk_hash`."""
        if listener.laddr is not None and listener.laddr.is_unspecified:
            hash = sk_hash
        conn = Conn(flow, hash, pick, listener)
        listener.accept_queue.append(conn)
        self.conns[flow] = conn
        return pick

    def datagram(self, laddr: str, lport: int, raddr: str, rport: int, hash: int | None,
                 cpu: int | None, payload: bytes | None) -> Pick:
        """udp_rcv() -> `__udp4_lib_lookup()` / `__udp6_lib_lookup()`.

        Delivery to a connected socket runs `sk_incoming_cpu_update()` (`__udp_queue_rcv_skb()`,
        `__udpv6_queue_rcv_skb()`): its `sk_incoming_cpu` becomes this CPU, with no change to a
        group's `incoming_cpu` count, which it puts back when it leaves a group it joins later."""
        self._set_cpu(cpu)
        flow = flow_of(laddr, lport, raddr, rport)
        chosen, pick = self.udp_lookup(flow, hash, cpu, payload)
        return self.place_datagram(flow, chosen, pick, cpu, payload)

    def udp_lookup(self, flow: Flow, hash: int | None, cpu: int | None,
                   payload: bytes | None) -> tuple[Sock | ErrPtr | _Unknown | None, Pick | None]:
        """`__udp4_lib_lookup()` / `__udp6_lib_lookup()` for a datagram of `flow`, on the CPU
        the namespace holds (`datagram` sets it): the socket and the unlabelled pick."""
        daddr, saddr = parse_ip(flow[0]), parse_ip(flow[2])
        skb = loopback_skb(IPPROTO_UDP, saddr, flow[3], daddr, flow[1], payload, cpu)
        return udp_lookup(self.socks, self.udp_buckets, self.udp_primary.get(flow[1], []),
                          saddr, flow[3], daddr, flow[1], LOOPBACK_IFINDEX, cpu, hash, skb)

    def place_datagram(self, flow: Flow, chosen: Sock | ErrPtr | _Unknown | None,
                       pick: Pick | None, cpu: int | None, payload: bytes | None) -> Pick:
        """Where `udp_lookup` put the datagram: queued on the socket it chose (the pick
        labelled with its group), or waiting as dropped or unplaced for its `recv`."""
        if isinstance(chosen, Sock):
            pick = self.queue_datagram(flow, self.socks[chosen.sk_id],
                                       self._label_pick(pick, chosen), cpu, payload)
        elif isinstance(chosen, _Unknown):
            pick = self._unknown_pick(pick)
            self.datagrams.arrive(flow, UNPLACED, pick, payload)
        else:
            pick = replace_pick(pick or Pick(sk=-1, reason="no-listener"), sk=-1, seq=self.seq)
            self.datagrams.arrive(flow, -1, pick, payload)
        return pick

    def queue_datagram(self, flow: Flow, receiver: Socket, pick: Pick, cpu: int | None,
                       payload: bytes | None) -> Pick:
        """A datagram of `flow` (its bytes: `payload`) queues on `receiver`, which the lookup
        chose (`pick`, labelled)."""
        self.datagrams.arrive(flow, receiver.sk.sk_id, pick, payload)
        if receiver.raddr is not None and cpu is not None:
            receiver.sk.sk_incoming_cpu = int(cpu)
        return pick

    def hash_route(self, event: str, laddr: str, lport: int,
                   classic: bool = False) -> Socket | None:
        """The socket whose group alone decides, by hash (and CPU), where every `syn` or
        `datagram` (`event`) to `laddr:lport` with a known hash and CPU goes while no socket
        changes: what `syn` / `datagram` would call `reuseport_select_sock` on. None when
        anything else could decide (a program, a connected socket, a socket outside a group);
        `classic`: a group whose classic program runs first decides too (the program reads
        only the packet and the CPU)."""
        daddr = parse_ip(laddr)
        if event == "syn":
            return tcp_hash_route(self.tcp_buckets, daddr, int(lport), LOOPBACK_IFINDEX, classic)
        return udp_hash_route(self.udp_buckets, daddr, int(lport), LOOPBACK_IFINDEX, classic)

    def pending(self) -> tuple[set[Flow], set[Flow]]:
        """The flows with a connection waiting for its `accept`/`reset`, and those with
        datagrams (delivered or dropped) waiting for a `recv`."""
        return set(self.conns), set(self.datagrams.flows)

    def unreceived(self) -> list[tuple[Flow, Pick]]:
        """Datagrams no `recv` observed, in the order they arrived: the model's pick for each
        (a socket, or -1 where the model dropped it). Call `settle()` first."""
        return list(self.datagrams.unreceived())

    # -- observations -----------------------------------------------------------------------------
    def accept(self, sk: int, laddr: str, lport: int, raddr: str, rport: int) -> Expectation:
        """`sk` accepted this connection: expected is the listener whose queue holds it."""
        return self.conn_observed(flow_of(laddr, lport, raddr, rport))

    def reset(self, laddr: str, lport: int, raddr: str, rport: int) -> Expectation:
        return self.conn_observed(flow_of(laddr, lport, raddr, rport))

    def conn_observed(self, flow: Flow) -> Expectation:
        """`accept` or `reset` of `flow` (its addresses as `flow_of` spells them): the connection
        leaves the queue that holds it; expected is that queue's listener."""
        conn = self.conns.pop(flow, None)
        if conn is None:
            return LOST_EVENTS
        listener = conn.listener
        if listener is not None:
            queue = listener.accept_queue
            if queue and queue[0] is conn:  # (accepted in queue order, mostly)
                queue.popleft()
            elif conn in queue:
                queue.remove(conn)
        pick = conn.pick
        if pick.unknown is not None:
            return Expectation(-1, pick, pick.unknown)
        # (`Expectation(...)` without its `__new__`: every accept and reset makes one)
        return _expectation(Expectation, (listener.sk.sk_id if listener is not None else -1, pick,
                                          None, False))

    def recv(self, sk: int, laddr: str, lport: int, raddr: str, rport: int,
             payload: bytes | None = None, token: object = None) -> Expectation:
        """`sk` received a datagram of this flow: paired per socket (`tracekit.replay.pairing`).
        A `recv` no datagram the model put on `sk` explains is `deferred` until `settle()`, which
        returns it with `token`."""
        return self.datagram_observed(sk, flow_of(laddr, lport, raddr, rport), payload, token)

    def datagram_observed(self, sk: int, flow: Flow, payload: bytes | None = None,
                          token: object = None) -> Expectation:
        """`recv` of `flow` (its addresses as `flow_of` spells them)."""
        seen = self.datagrams.observe(flow, sk, payload, token)
        if seen.deferred:
            return DEFERRED_EXPECTATION
        return _received(seen.item)

    def settle(self) -> list[tuple[object, Expectation]]:
        """The deferred `recv`s (their `token`s), in trace order, with what the model expected."""
        return [(token, _received(pick)) for token, pick in self.datagrams.settle()]


def _received(pick: Pick | None) -> Expectation:
    if pick is None:
        return LOST_EVENTS
    return _expectation(Expectation, (pick.sk, pick, pick.unknown, False))


def classic_prog(prog: bytes | None, ret: int | None) -> BpfProg | None:
    """The classic program (`struct sock_filter` array) a row attaches, as `__get_filter()` takes
    it: None when the kernel refuses it (`bpf_check_basics_ok()`, `bpf_check_classic()`), so the
    group stays as it was. A refused program the row reports as attached (`ret` 0) is a story the
    kernel could not have told."""
    raw = prog or b""
    if len(raw) % 8:
        why = f"{len(raw)} bytes are not whole 8-byte struct sock_filter instructions"
    else:
        why = cbpf.classic_refusal(cbpf.decode_sock_filter(raw))
    if why is None:
        return BpfProg.cbpf(cbpf.decode_sock_filter(raw))
    if ret == 0:
        raise StoryError(f"classic BPF program reported as attached (ret 0), but the kernel "
                         f"refuses it: {why}", "prog")
    return None


def ebpf_prog(prog: bytes | None, attach_type: int | None) -> BpfProg:
    """The eBPF program a trace names: `prog` holds the UTF-8 bytes of the program's name."""
    name = (prog or b"").decode("utf-8", errors="replace")
    migrate = attach_type == BPF_SK_REUSEPORT_SELECT_OR_MIGRATE
    return BpfProg.ebpf(name, migrate=migrate)


__all__ = ["Conn", "Expectation", "Flow", "Host", "Migration", "Socket", "classic_prog", "ebpf_prog",
           "flow_of",
           "BPF_SK_REUSEPORT_SELECT"]
