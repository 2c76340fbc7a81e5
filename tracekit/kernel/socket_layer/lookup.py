"""Socket lookup for an arriving connection request or datagram, as the kernel scores sockets.

TCP: `__inet_lookup_listener()` / `inet6_lookup_listener()` walk the listen bucket of the exact
destination address, then the wildcard one (`inet_lhash2_lookup()`); the first socket whose
`compute_score()` beats the best so far runs reuseport selection, and a selection ends the walk.
UDP: `__udp4_lib_lookup()` / `__udp6_lib_lookup()`: the 4-tuple hash of connected sockets first
(`udp4_lib_lookup4()`, 6.13+), then `udp4_lib_lookup2()` on the exact and wildcard buckets, where a
group with connected sockets falls back to scoring (`reuseport_has_conns()` and the rescore), then
the primary-hash fallback `udp4_lib_lookup1()` (6.14+) that ignores groups.
"""

from __future__ import annotations

from ipaddress import IPv4Address
from itertools import chain
from typing import TYPE_CHECKING

from tracekit.kernel.bpf import BPF_PROG_TYPE_SK_REUSEPORT, ErrPtr, Skb, _Unknown
from tracekit.kernel.sock import TCP_ESTABLISHED, Sock, sock_net
from tracekit.kernel.sock_reuseport import reuseport_has_conns
from tracekit.kernel.socket_layer.addresses import (
    ANY,
    IP,
    IPV4_ANY,
    IPV6_ANY,
    ip_text,
    v4_view,
    v6_view,
)
from tracekit.kernel.socket_layer.selection import Pick, replace_pick, select_traced

if TYPE_CHECKING:
    from tracekit.kernel.socket_layer.host import Socket

TCP_HDR_LEN = 20
UDP_HDR_LEN = 8

_Found = tuple["Sock | ErrPtr | _Unknown | None", Pick | None]


def _dev_eq(bound_dev_if: int, dif: int) -> bool:
    """`inet_sk_bound_dev_eq()` without l3mdev: unbound sockets take packets from any device."""
    return not bound_dev_if or bound_dev_if == dif


def _cpu_bonus(s: Socket, cpu: int | None) -> int:
    return 1 if cpu is not None and s.sk.sk_incoming_cpu == cpu else 0


def tcp_compute_score(s: Socket, daddr: IP, lport: int, dif: int, cpu: int | None) -> int:
    """net/ipv4/inet_hashtables.c and net/ipv6/inet6_hashtables.c `compute_score()`."""
    if s.lport != lport:
        return -1
    if isinstance(daddr, IPv4Address):
        if s.v6only or v4_view(s.family, s.laddr) != daddr:
            return -1
        if not _dev_eq(s.bound_dev_if, dif):
            return -1
        score = 2 if s.bound_dev_if else 1
        if s.family == 4:
            score += 1
        return score + _cpu_bonus(s, cpu)
    if s.family != 6 or v6_view(s.family, s.laddr) != daddr:
        return -1
    if not _dev_eq(s.bound_dev_if, dif):
        return -1
    return (2 if s.bound_dev_if else 1) + _cpu_bonus(s, cpu)


def udp_compute_score(s: Socket, saddr: IP, sport: int, daddr: IP, lport: int, dif: int,
                      cpu: int | None) -> int:
    """net/ipv4/udp.c and net/ipv6/udp.c `compute_score()`: connected sockets score higher."""
    if s.lport != lport:
        return -1
    if isinstance(daddr, IPv4Address):
        if s.v6only or v4_view(s.family, s.laddr) != daddr:
            return -1
        score = 2 if s.family == 4 else 1
        step = 4
        raddr = v4_view(4, s.raddr) if s.raddr is not None else None
    else:
        if s.family != 6 or v6_view(s.family, s.laddr) != daddr:
            return -1
        score, step = 0, 1
        raddr = v6_view(6, s.raddr) if s.raddr is not None else None
        saddr = v6_view(6, saddr)
    if s.raddr is not None:
        if raddr != saddr:
            return -1
        score += step
    if s.rport:
        if s.rport != sport:
            return -1
        score += step
    if not _dev_eq(s.bound_dev_if, dif):
        return -1
    if s.bound_dev_if:
        score += step
    return score + _cpu_bonus(s, cpu)


def _any_of(daddr: IP) -> IP:
    return IPV4_ANY if isinstance(daddr, IPv4Address) else IPV6_ANY


def _needs_cpu(candidates: list[Socket], cpu: int | None) -> bool:
    return cpu is None and any(s.sk.sk_incoming_cpu >= 0 for s in candidates)


def inet_lhash2_lookup(bucket: list[Socket], daddr: IP, lport: int, dif: int, cpu: int | None,
                       hash: int | None, skb: Skb) -> _Found:
    result: Sock | None = None
    hiscore = 0
    for s in bucket:
        score = tcp_compute_score(s, daddr, lport, dif, cpu)
        if score > hiscore:
            if s.sk.sk_reuseport:
                chosen, pick = select_traced(s.sk, hash, skb, TCP_HDR_LEN, cpu is not None)
                if chosen is not None:
                    return chosen, pick
            result, hiscore = s.sk, score
    return result, None if result is None else Pick(sk=result.sk_id, reason="lookup")


def tcp_lookup_listener(buckets: dict, daddr: IP, lport: int, dif: int, cpu: int | None,
                        hash: int | None, skb: Skb) -> _Found:
    """`__inet_lookup_listener()`: exact address first, then the wildcard; errors become NULL."""
    for key in (ip_text(daddr), ANY):
        bucket = buckets.get((lport, key), [])
        if _needs_cpu(bucket, cpu):
            return _Unknown(), Pick(sk=-1, reason="incoming-cpu", unknown="no-cpu")
        found = inet_lhash2_lookup(bucket, daddr if key != ANY else _any_of(daddr), lport, dif,
                                   cpu, hash, skb)
        if found[0] is not None:
            return found
    return None, None


def udp_lookup2(owners: dict[int, Socket], bucket: list[Socket], saddr: IP, sport: int, daddr: IP, lport: int, dif: int,
                cpu: int | None, hash: int | None, skb: Skb) -> _Found:
    """`udp4_lib_lookup2()`: when the group has connections, its pick competes with the rest of the
    slot with the score `compute_score()` gives it (`udp_rescore`, 6.5; from 6.10 only when higher
    than the first member's), before with the score of the group's first member."""
    result = None
    pick: Pick | None = None
    badness = 0 if isinstance(daddr, IPv4Address) else -1
    for s in bucket:
        score = udp_compute_score(s, saddr, sport, daddr, lport, dif, cpu)
        if score <= badness:
            continue
        badness = score
        if s.sk.sk_state == TCP_ESTABLISHED:
            result, pick = s.sk, Pick(sk=s.sk.sk_id, reason="connected")
            continue
        chosen = None
        if s.sk.sk_reuseport:
            chosen, pick = select_traced(s.sk, hash, skb, UDP_HDR_LEN, cpu is not None)
        if chosen is None:
            result, pick = s.sk, Pick(sk=s.sk.sk_id, reason="lookup")
            continue
        if not reuseport_has_conns(s.sk) or isinstance(chosen, _Unknown):
            return chosen, pick
        if isinstance(chosen, ErrPtr):
            result = chosen
            continue
        result = chosen
        profile = sock_net(s.sk).profile
        if not profile.udp_rescore:
            continue  # before 6.5 the pick keeps the score of the group's first member
        rescore = udp_compute_score(owners[chosen.sk_id], saddr, sport, daddr, lport, dif, cpu)
        if rescore > badness or not profile.udp_rescore_keeps_higher:
            badness = rescore
    return result, pick


def udp_lookup1(primary: list[Socket], saddr: IP, sport: int, daddr: IP, lport: int, dif: int,
                cpu: int | None) -> _Found:
    """`udp4_lib_lookup1()`: the best-scoring socket on the port, groups ignored."""
    result, badness = None, 0 if isinstance(daddr, IPv4Address) else -1
    for s in primary:
        score = udp_compute_score(s, saddr, sport, daddr, lport, dif, cpu)
        if score > badness:
            result, badness = s.sk, score
    return result, None if result is None else Pick(sk=result.sk_id, reason="lookup")


def udp_lookup(owners: dict[int, Socket], buckets: dict, primary: list[Socket], saddr: IP, sport: int, daddr: IP, lport: int,
               dif: int, cpu: int | None, hash: int | None, skb: Skb) -> _Found:
    """`__udp4_lib_lookup()` / `__udp6_lib_lookup()`."""
    exact = buckets.get((lport, ip_text(daddr)), [])
    for s in exact:  # udp4_lib_lookup4(): the connected socket of this exact 4-tuple
        if s.sk.sk_state == TCP_ESTABLISHED and s.raddr is not None and \
                udp_compute_score(s, saddr, sport, daddr, lport, dif, None) >= 0:
            return s.sk, Pick(sk=s.sk.sk_id, reason="connected")
    wildcard = buckets.get((lport, ANY), [])
    if _needs_cpu(exact + wildcard, cpu):
        return _Unknown(), Pick(sk=-1, reason="incoming-cpu", unknown="no-cpu")
    result, pick = udp_lookup2(owners, exact, saddr, sport, daddr, lport, dif, cpu, hash, skb)
    if result is not None:
        return result, pick
    result, pick = udp_lookup2(owners, wildcard, saddr, sport, _any_of(daddr), lport, dif, cpu, hash, skb)
    if result is not None and not isinstance(result, ErrPtr):
        return result, pick
    fallback, fallback_pick = udp_lookup1(primary, saddr, sport, daddr, lport, dif, cpu)
    if fallback is not None:
        return fallback, fallback_pick
    return result, pick if pick is None else replace_pick(pick, dropped=True)


# -- routes: where a hash alone decides ---------------------------------------------------------

def _hash_decides(s: Socket, classic: bool = False) -> bool:
    """`select_traced(s.sk, hash, ...)` with a hash and a CPU chooses a socket of `s`'s group by
    `reuseport_select_sock_by_hash()` alone: a group, no program, a member that is not
    ESTABLISHED (so the selection never returns NULL). `classic`: or a classic program first
    (`run_bpf_filter()`), the hash where it names no socket."""
    reuse = s.sk.sk_reuseport_cb if s.sk.sk_reuseport else None
    if reuse is None or reuse.num_socks <= 0:
        return False
    prog = reuse.prog
    if prog is not None and not (classic and prog.type != BPF_PROG_TYPE_SK_REUSEPORT):
        return False
    return any(m.sk_state != TCP_ESTABLISHED for m in reuse.live())


def tcp_hash_route(buckets: dict, daddr: IP, lport: int, dif: int,
                   classic: bool = False) -> Socket | None:
    """The listener `tcp_lookup_listener()` runs reuseport selection on for every connection
    to (daddr, lport) with a hash and a CPU, when that selection decides (`_hash_decides`):
    the first listener that scores in the exact bucket, else in the wildcard one. The CPU bonus
    cannot change which listener scores first (it only adds to a positive score). None otherwise."""
    for key in (ip_text(daddr), ANY):
        dest = daddr if key != ANY else _any_of(daddr)
        for s in buckets.get((lport, key), []):
            if tcp_compute_score(s, dest, lport, dif, None) > 0:
                return s if _hash_decides(s, classic) else None
    return None


def udp_hash_route(buckets: dict, daddr: IP, lport: int, dif: int,
                   classic: bool = False) -> Socket | None:
    """As `tcp_hash_route` for `udp_lookup()`: only where neither bucket holds a connected
    socket (so neither the 4-tuple lookup nor a connected socket's score nor the source of the
    datagram can matter) and the group has no connections (no rescore)."""
    exact = buckets.get((lport, ip_text(daddr)), [])
    wildcard = buckets.get((lport, ANY), [])
    for s in chain(exact, wildcard):
        if s.raddr is not None or s.rport or s.sk.sk_state == TCP_ESTABLISHED:
            return None
    for bucket, dest in ((exact, daddr), (wildcard, _any_of(daddr))):
        badness = 0 if isinstance(dest, IPv4Address) else -1
        for s in bucket:
            if udp_compute_score(s, dest, 0, dest, lport, dif, None) > badness:
                if not _hash_decides(s, classic) or reuseport_has_conns(s.sk):
                    return None
                return s
    return None
