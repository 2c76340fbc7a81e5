"""Kernel-layer events: calls into `sock_reuseport.c` recorded by function probes or a simulator,
replayed by calling the model's function of the same name with the same arguments.

Sockets are created on first use. A socket counts as hashed (`sk_unhashed()` false, which
`reuseport_attach_prog()` reads) from a successful `reuseport_alloc`/`reuseport_add_sock` (its
caller hashes it next) until it leaves the group.
"""

from __future__ import annotations

from typing import Callable

from tracekit.kernel import sock_reuseport as sr
from tracekit.kernel.errno import EINVAL
from tracekit.kernel.sock import Sock
from tracekit.kernel.socket_layer.host import Host, classic_prog, ebpf_prog
from tracekit.kernel.structs import Skb, _Unknown
from tracekit.kernel.socket_layer.selection import Pick, migrate_traced, select_traced


def _sk(host: Host, sk: int, proto: str | None = None) -> Sock:
    return host.sock(int(sk), proto).sk


def reuseport_alloc(host: Host, sk: int, bind_inany: int | None, proto: str | None = None) -> int:
    s = _sk(host, sk, proto)
    s.sk_reuseport = True
    ret = sr.reuseport_alloc(s, bool(bind_inany))
    s.hashed = ret == 0 or s.hashed
    return ret


def reuseport_add_sock(host: Host, sk: int, sk2: int, bind_inany: int | None,
                       proto: str | None = None) -> int:
    s, s2 = _sk(host, sk, proto), _sk(host, sk2, proto)
    s.sk_reuseport = True
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


def reuseport_select_sock(host: Host, sk: int, hash: int | None, cpu: int | None,
                          payload: bytes | None) -> Pick:
    if cpu is not None:
        host.net.cpu = int(cpu)
    s = _sk(host, sk)
    skb = Skb(payload=payload, len=len(payload) if payload is not None else None, cpu=cpu)
    chosen, pick = select_traced(s, hash, skb, 0, cpu_known=cpu is not None)
    if isinstance(chosen, _Unknown) and pick.unknown is None:
        pick = Pick(sk=-1, reason=pick.reason, unknown="no-hash")
    return pick


def reuseport_migrate_sock(host: Host, sk: int, sk2: int, hash: int | None,
                           cpu: int | None) -> Pick:
    if cpu is not None:
        host.net.cpu = int(cpu)
    s, child = _sk(host, sk), _sk(host, sk2)
    _chosen, pick = migrate_traced(s, child, hash)
    host.departing.add(child.sk_id)
    return pick


def reuseport_attach_prog(host: Host, sk: int, prog: bytes | None, name: str | None,
                          value: int | None, ret: int | None = None) -> int:
    """`prog` bytes: a classic program (`struct sock_filter` array); else `name` names an eBPF
    program (`value` 40 = BPF_SK_REUSEPORT_SELECT_OR_MIGRATE). A classic program the kernel
    refuses is not attached (-EINVAL), and is an input error where `ret` says it was."""
    if prog is not None and not name:
        bpf = classic_prog(prog, ret)
        if bpf is None:
            return -EINVAL
    else:
        bpf = ebpf_prog((name or "").encode() if name else prog, value)
    return sr.reuseport_attach_prog(_sk(host, sk), bpf)


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


def reuseport_detach_prog(host: Host, sk: int) -> int:
    return sr.reuseport_detach_prog(_sk(host, sk))


def reuseport_has_conns_set(host: Host, sk: int) -> None:
    sr.reuseport_has_conns_set(_sk(host, sk))


def reuseport_update_incoming_cpu(host: Host, sk: int, value: int | None) -> None:
    sr.reuseport_update_incoming_cpu(_sk(host, sk), int(value if value is not None else -1))


def sk_state(host: Host, sk: int, value: int) -> None:
    _sk(host, sk).sk_state = int(value)
