"""Kernel-layer events: calls into `sock_reuseport.c` recorded by function probes or a simulator,
replayed by calling the model's function of the same name with the same arguments.

Sockets are created on first use. A socket counts as hashed (`sk_unhashed()` false, which
`reuseport_attach_prog()` reads) from a successful `reuseport_alloc`/`reuseport_add_sock` (its
caller hashes it next) until it leaves the group.

Membership the trace never established: a probe attached to a running host meets sockets of
groups built before it started (or while it lost events). A socket whose first event is not its
own `reuseport_alloc`/`reuseport_add_sock` is in `Host.membership_unknown` until one of those
puts it in a group the trace knows; so is a socket added to such a socket's group. Their
selections and migrations are `unknown` (reason `membership-unknown`), and the calls that would
change their groups leave the model alone (their return codes are unknown too, `None` here).
"""

from __future__ import annotations

from typing import Callable

from tracekit.kernel import sock_reuseport as sr
from tracekit.kernel.errno import EINVAL
from tracekit.kernel.sock import Sock
from tracekit.kernel.socket_layer.addresses import parse_ip
from tracekit.kernel.socket_layer.host import Host, classic_prog, ebpf_prog
from tracekit.kernel.structs import Skb, _Unknown
from tracekit.kernel.socket_layer.selection import (Pick, migrate_traced, replace_pick,
                                                    select_traced)


MEMBERSHIP_UNKNOWN = "membership-unknown"


def _sk(host: Host, sk: int, proto: str | None = None, *, joins: bool = False) -> Sock:
    return host.kernel_sock(int(sk), proto, joins=joins).sk


def _where(host: Host, sk: int, laddr: str | None, lport: int | None, family: int | None) -> None:
    """A probe's row names the socket's local address: the group's label comes from it."""
    if lport is None:
        return
    s = host.sock(int(sk))
    s.lport = int(lport)
    if laddr is not None:
        s.laddr = parse_ip(laddr)
    if family is not None:
        s.family = int(family)
    host.labelled = True


def reuseport_alloc(host: Host, sk: int, bind_inany: int | None, proto: str | None = None,
                    laddr: str | None = None, lport: int | None = None,
                    family: int | None = None) -> int:
    s = _sk(host, sk, proto, joins=True)
    host.membership_unknown.discard(s.sk_id)
    _where(host, sk, laddr, lport, family)
    s.sk_reuseport = True
    ret = sr.reuseport_alloc(s, bool(bind_inany))
    s.hashed = ret == 0 or s.hashed
    return ret


def reuseport_add_sock(host: Host, sk: int, sk2: int, bind_inany: int | None,
                       proto: str | None = None, laddr: str | None = None,
                       lport: int | None = None, family: int | None = None) -> int | None:
    s, s2 = _sk(host, sk, proto, joins=True), _sk(host, sk2, proto)
    _where(host, sk, laddr, lport, family)
    s.sk_reuseport = True
    if s2.sk_id in host.membership_unknown:
        # sk joins a group the trace never saw built: it leaves whatever group it had here
        if s.sk_reuseport_cb is not None:
            sr.reuseport_detach_sock(s)
        host.membership_unknown.add(s.sk_id)
        s.hashed = True
        return None
    host.membership_unknown.discard(s.sk_id)
    ret = sr.reuseport_add_sock(s, s2, bool(bind_inany))
    s.hashed = ret == 0 or s.hashed
    return ret


def reuseport_detach_sock(host: Host, sk: int) -> None:
    s = _sk(host, sk)
    sr.reuseport_detach_sock(s)
    s.hashed = False
    host.departing.add(s.sk_id)


def reuseport_stop_listen_sock(host: Host, sk: int, proto: str | None = None) -> None:
    s = _sk(host, sk, proto)
    if proto is not None:
        s.sk_protocol = {"tcp": 6, "udp": 17}[proto]
    if s.sk_reuseport_cb is not None:
        sr.reuseport_stop_listen_sock(s)
    s.hashed = False


def _unknown_membership(host: Host, s: Sock, cpu: int | None) -> Pick | None:
    if s.sk_id not in host.membership_unknown:
        return None
    return Pick(sk=-1, reason="hash", unknown=MEMBERSHIP_UNKNOWN, cpu=cpu)


def reuseport_select_sock(host: Host, sk: int, hash: int | None, cpu: int | None,
                          payload: bytes | None) -> Pick:
    if cpu is not None:
        host.net.cpu = int(cpu)
    s = _sk(host, sk)
    unknown = _unknown_membership(host, s, cpu)
    if unknown is not None:
        return unknown
    skb = Skb(payload=payload, len=len(payload) if payload is not None else None, cpu=cpu)
    chosen, pick = select_traced(s, hash, skb, 0, cpu_known=cpu is not None)
    if isinstance(chosen, _Unknown) and pick.unknown is None:
        pick = Pick(sk=-1, reason=pick.reason, unknown="no-hash")
    return pick


def reuseport_migrate_sock(host: Host, sk: int, sk2: int, hash: int | None,
                           cpu: int | None) -> Pick:
    if cpu is not None:
        host.net.cpu = int(cpu)
    s, child = _sk(host, sk), _sk(host, sk2, joins=True)
    host.departing.add(child.sk_id)
    unknown = _unknown_membership(host, s, cpu)
    if unknown is not None:
        return replace_pick(unknown, reason="migration", hash=hash)
    _chosen, pick = migrate_traced(s, child, hash)
    return pick


def reuseport_attach_prog(host: Host, sk: int, prog: bytes | None, name: str | None,
                          value: int | None, ret: int | None = None) -> int | None:
    """`prog` bytes: a classic program (`struct sock_filter` array); else `name` names an eBPF
    program (`value` 40 = BPF_SK_REUSEPORT_SELECT_OR_MIGRATE). A classic program the kernel
    refuses is not attached (-EINVAL), and is an input error where `ret` says it was."""
    s = _sk(host, sk)
    if s.sk_id in host.membership_unknown:
        return None
    if prog is not None and not name:
        bpf = classic_prog(prog, ret)
        if bpf is None:
            return -EINVAL
    else:
        bpf = ebpf_prog((name or "").encode() if name else prog, value)
    return sr.reuseport_attach_prog(s, bpf)


def checkpoint(host: Host, sks: list[int | None]) -> Callable[[], None]:
    """A way back to the state of these sockets, their groups and the reuseport ids as they are
    now: for a call the kernel reports refused (`ret` < 0) where the model went through, so
    the model follows what the kernel did (the group stays as it was)."""
    socks = [_sk(host, sk) for sk in sks if sk is not None]
    groups = {id(s.sk_reuseport_cb): s.sk_reuseport_cb for s in socks if s.sk_reuseport_cb}
    members = {id(m): m for g in groups.values() for m in g.socks if m is not None}
    members.update((id(s), s) for s in socks)
    saved_socks = [(m, dict(vars(m))) for m in members.values()]
    saved_groups = [(g, {**vars(g), "socks": list(g.socks)}) for g in groups.values()]
    ida = set(host.net.reuseport_ida.used)

    def restore() -> None:
        for obj, values in saved_socks + saved_groups:
            vars(obj).update(values)
        host.net.reuseport_ida.used = ida

    return restore


def reuseport_detach_prog(host: Host, sk: int) -> int | None:
    s = _sk(host, sk)
    if s.sk_id in host.membership_unknown:
        return None
    return sr.reuseport_detach_prog(s)


def reuseport_has_conns_set(host: Host, sk: int) -> None:
    sr.reuseport_has_conns_set(_sk(host, sk))


def reuseport_update_incoming_cpu(host: Host, sk: int, value: int | None) -> None:
    sr.reuseport_update_incoming_cpu(_sk(host, sk), int(value if value is not None else -1))


def sk_state(host: Host, sk: int, value: int) -> None:
    _sk(host, sk).sk_state = int(value)
