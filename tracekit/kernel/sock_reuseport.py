"""net/core/sock_reuseport.c, function by function.

The group keeps one array: live sockets at the front (`socks[0:num_socks]`), sockets that stopped
listening but may still hand over queued connections at the back
(`socks[max_socks - num_closed_socks:max_socks]`). Removal swaps the last live socket into the hole,
which decides where later hashes land. Names, return codes and array moves are the kernel's, so this
file reads side by side with the C one. Locking and RCU have no counterpart here: the model is
single-threaded and an event is one critical section.
"""

from __future__ import annotations

from tracekit.kernel.bpf import bpf_run_sk_reuseport, run_bpf_filter
from tracekit.kernel.errno import EBUSY, EINVAL, ENOENT, ENOMEM
from tracekit.kernel.net import raw_smp_processor_id
from tracekit.kernel.sock import sk_unhashed, sock_net
from tracekit.kernel.structs import (
    BPF_PROG_TYPE_SK_REUSEPORT,
    BPF_SK_REUSEPORT_SELECT_OR_MIGRATE,
    IPPROTO_TCP,
    TCP_ESTABLISHED,
    BpfProg,
    ErrPtr,
    SelectResult,
    Skb,
    Sock,
    SockReuseport,
    _Unknown,
)

INIT_SOCKS = 128
U16_MAX = 0xFFFF


def reciprocal_scale(val: int, ep_ro: int) -> int:
    """include/linux/math.h: map a u32 onto [0, ep_ro) with a multiply and a shift."""
    return ((val & 0xFFFFFFFF) * ep_ro) >> 32


def reuseport_has_conns_set(sk: Sock) -> None:
    reuse = sk.sk_reuseport_cb
    if reuse is None:
        return
    reuse.has_conns = True


def reuseport_has_conns(sk: Sock) -> bool:
    """include/net/sock_reuseport.h."""
    reuse = sk.sk_reuseport_cb
    return bool(reuse is not None and reuse.has_conns)


def __reuseport_get_incoming_cpu(reuse: SockReuseport) -> None:
    # `u16 incoming_cpu`: wraps like the kernel's counter.
    reuse.incoming_cpu = (reuse.incoming_cpu + 1) & 0xFFFF


def __reuseport_put_incoming_cpu(reuse: SockReuseport) -> None:
    reuse.incoming_cpu = (reuse.incoming_cpu - 1) & 0xFFFF


def reuseport_get_incoming_cpu(sk: Sock, reuse: SockReuseport) -> None:
    if sk.sk_incoming_cpu >= 0:
        __reuseport_get_incoming_cpu(reuse)


def reuseport_put_incoming_cpu(sk: Sock, reuse: SockReuseport) -> None:
    if sk.sk_incoming_cpu >= 0:
        __reuseport_put_incoming_cpu(reuse)


def reuseport_update_incoming_cpu(sk: Sock, val: int) -> None:
    """setsockopt(SO_INCOMING_CPU) path; `reuse->incoming_cpu` counts members with one set.

    Before the incoming_cpu profile, setsockopt() wrote `sk_incoming_cpu` and nothing else.
    """
    reuse = sk.sk_reuseport_cb
    if reuse is None or not sock_net(sk).profile.incoming_cpu:
        sk.sk_incoming_cpu = val
        return
    old_sk_incoming_cpu = sk.sk_incoming_cpu
    sk.sk_incoming_cpu = val
    if old_sk_incoming_cpu < 0 and val >= 0:
        __reuseport_get_incoming_cpu(reuse)
    elif old_sk_incoming_cpu >= 0 and val < 0:
        __reuseport_put_incoming_cpu(reuse)


def reuseport_sock_index(sk: Sock, reuse: SockReuseport, closed: bool) -> int:
    if not closed:
        left, right = 0, reuse.num_socks
    else:
        left, right = reuse.max_socks - reuse.num_closed_socks, reuse.max_socks
    for i in range(left, right):
        if reuse.socks[i] is sk:
            return i
    return -1


def __reuseport_add_sock(sk: Sock, reuse: SockReuseport) -> None:
    reuse.socks[reuse.num_socks] = sk
    reuse.num_socks += 1
    if sock_net(sk).profile.incoming_cpu:
        reuseport_get_incoming_cpu(sk, reuse)


def __reuseport_detach_sock(sk: Sock, reuse: SockReuseport) -> bool:
    i = reuseport_sock_index(sk, reuse, False)
    if i == -1:
        return False
    reuse.socks[i] = reuse.socks[reuse.num_socks - 1]
    reuse.num_socks -= 1
    if sock_net(sk).profile.incoming_cpu:
        reuseport_put_incoming_cpu(sk, reuse)
    return True


def __reuseport_add_closed_sock(sk: Sock, reuse: SockReuseport) -> None:
    reuse.socks[reuse.max_socks - reuse.num_closed_socks - 1] = sk
    reuse.num_closed_socks += 1
    if sock_net(sk).profile.incoming_cpu:
        reuseport_get_incoming_cpu(sk, reuse)


def __reuseport_detach_closed_sock(sk: Sock, reuse: SockReuseport) -> bool:
    i = reuseport_sock_index(sk, reuse, True)
    if i == -1:
        return False
    reuse.socks[i] = reuse.socks[reuse.max_socks - reuse.num_closed_socks]
    reuse.num_closed_socks -= 1
    if sock_net(sk).profile.incoming_cpu:
        reuseport_put_incoming_cpu(sk, reuse)
    return True


def __reuseport_alloc(max_socks: int) -> SockReuseport:
    return SockReuseport(max_socks=max_socks, socks=[None] * max_socks)


def reuseport_alloc(sk: Sock, bind_inany: bool) -> int:
    reuse = sk.sk_reuseport_cb
    if reuse is not None:
        if reuse.num_closed_socks:
            # sk was shutdown()ed before
            return reuseport_resurrect(sk, reuse, None, bind_inany)
        # Only set bind_inany when true: the bind/hash path may have set it already.
        if bind_inany:
            reuse.bind_inany = bind_inany
        return 0

    reuse = __reuseport_alloc(INIT_SOCKS)
    reuse.reuseport_id = sock_net(sk).reuseport_ida.ida_alloc()
    reuse.bind_inany = bind_inany
    reuse.socks[0] = sk
    reuse.num_socks = 1
    if sock_net(sk).profile.incoming_cpu:
        reuseport_get_incoming_cpu(sk, reuse)
    sk.sk_reuseport_cb = reuse
    return 0


def reuseport_grow(reuse: SockReuseport) -> SockReuseport | None:
    more_socks_size = reuse.max_socks * 2
    if more_socks_size > U16_MAX:
        if reuse.num_closed_socks:
            # Make room by removing a closed sk: its children have migrated already.
            sk = reuse.socks[reuse.max_socks - reuse.num_closed_socks]
            assert sk is not None
            sk.sk_reuseport_cb = None
            __reuseport_detach_closed_sock(sk, reuse)
            return reuse
        return None

    more_reuse = __reuseport_alloc(more_socks_size)
    more_reuse.num_socks = reuse.num_socks
    more_reuse.num_closed_socks = reuse.num_closed_socks
    more_reuse.prog = reuse.prog
    more_reuse.reuseport_id = reuse.reuseport_id
    more_reuse.bind_inany = reuse.bind_inany
    more_reuse.has_conns = reuse.has_conns
    more_reuse.incoming_cpu = reuse.incoming_cpu

    more_reuse.socks[: reuse.num_socks] = reuse.socks[: reuse.num_socks]
    closed_from = more_reuse.max_socks - more_reuse.num_closed_socks
    more_reuse.socks[closed_from:] = reuse.socks[reuse.max_socks - reuse.num_closed_socks :]

    for member in reuse.socks[: reuse.max_socks]:
        if member is not None:
            member.sk_reuseport_cb = more_reuse
    return more_reuse


def reuseport_free_rcu(reuse: SockReuseport, sk: Sock) -> None:
    sock_net(sk).reuseport_ida.ida_free(reuse.reuseport_id)


def reuseport_add_sock(sk: Sock, sk2: Sock, bind_inany: bool) -> int:
    """Add `sk` to the group of `sk2`; returns 0, -EBUSY or -ENOMEM."""
    if sk2.sk_reuseport_cb is None:
        err = reuseport_alloc(sk2, bind_inany)
        if err:
            return err

    reuse = sk2.sk_reuseport_cb
    assert reuse is not None
    old_reuse = sk.sk_reuseport_cb
    if old_reuse is not None and old_reuse.num_closed_socks:
        # sk was shutdown()ed before
        return reuseport_resurrect(sk, old_reuse, reuse, reuse.bind_inany)

    if old_reuse is not None and old_reuse.num_socks != 1:
        return -EBUSY

    if reuse.num_socks + reuse.num_closed_socks == reuse.max_socks:
        grown = reuseport_grow(reuse)
        if grown is None:
            return -ENOMEM
        reuse = grown

    __reuseport_add_sock(sk, reuse)
    sk.sk_reuseport_cb = reuse

    if old_reuse is not None:
        reuseport_free_rcu(old_reuse, sk)
    return 0


def reuseport_resurrect(sk: Sock, old_reuse: SockReuseport, reuse: SockReuseport | None,
                        bind_inany: bool) -> int:
    if old_reuse is reuse:
        # Same group: pop sk out of the closed section, push it into the listening one.
        __reuseport_detach_closed_sock(sk, old_reuse)
        __reuseport_add_sock(sk, old_reuse)
        return 0

    if reuse is None:
        # bind()/listen() cannot carry the shutdown()ed socket's eBPF prog over, and setsockopt()
        # must not change the listeners' prog: give sk a new group of its own.
        reuse = __reuseport_alloc(INIT_SOCKS)
        reuse.reuseport_id = sock_net(sk).reuseport_ida.ida_alloc()
        reuse.bind_inany = bind_inany
    else:
        # Every other listener of the old group closed and sk2 listened on the port, or sk
        # listened without bind(), was shut down, and listens again where sk2 listens.
        if reuse.num_socks + reuse.num_closed_socks == reuse.max_socks:
            grown = reuseport_grow(reuse)
            if grown is None:
                return -ENOMEM
            reuse = grown

    __reuseport_detach_closed_sock(sk, old_reuse)
    __reuseport_add_sock(sk, reuse)
    sk.sk_reuseport_cb = reuse

    if old_reuse.num_socks + old_reuse.num_closed_socks == 0:
        reuseport_free_rcu(old_reuse, sk)
    return 0


def reuseport_detach_sock(sk: Sock) -> None:
    reuse = sk.sk_reuseport_cb
    # reuseport_grow() has detached a closed sk
    if reuse is None:
        return
    sk.sk_reuseport_cb = None
    if not __reuseport_detach_closed_sock(sk, reuse):
        __reuseport_detach_sock(sk, reuse)
    if reuse.num_socks + reuse.num_closed_socks == 0:
        reuseport_free_rcu(reuse, sk)


def reuseport_stop_listen_sock(sk: Sock) -> None:
    if sk.sk_protocol == IPPROTO_TCP:
        reuse = sk.sk_reuseport_cb
        assert reuse is not None
        prog = reuse.prog
        if sock_net(sk).sysctl_tcp_migrate_req or (
            prog is not None and prog.expected_attach_type == BPF_SK_REUSEPORT_SELECT_OR_MIGRATE
        ):
            # Migration capable: move sk from the listening section to the closed section.
            __reuseport_detach_sock(sk, reuse)
            __reuseport_add_closed_sock(sk, reuse)
            return
    # Not capable to do migration, detach immediately
    reuseport_detach_sock(sk)


def reuseport_select_sock_by_hash(reuse: SockReuseport, hash: int, num_socks: int,
                                  cpu: int) -> Sock | None:
    """Dispatches on the profile: the two bodies below are the kernel's before and since 6.2."""
    first = reuse.socks[0]
    assert first is not None
    if sock_net(first).profile.incoming_cpu:
        return _select_by_hash_incoming_cpu(reuse, hash, num_socks, cpu)
    return _select_by_hash_5_14(reuse, hash, num_socks)


def _select_by_hash_5_14(reuse: SockReuseport, hash: int, num_socks: int) -> Sock | None:
    i = j = reciprocal_scale(hash, num_socks)
    while reuse.socks[i].sk_state == TCP_ESTABLISHED:  # type: ignore[union-attr]
        i += 1
        if i >= num_socks:
            i = 0
        if i == j:
            return None
    return reuse.socks[i]


def _select_by_hash_incoming_cpu(reuse: SockReuseport, hash: int, num_socks: int,
                                 cpu: int) -> Sock | None:
    first_valid_sk = None
    i = j = reciprocal_scale(hash, num_socks)
    while True:
        sk = reuse.socks[i]
        assert sk is not None
        if sk.sk_state != TCP_ESTABLISHED:
            if not reuse.incoming_cpu:
                return sk
            if sk.sk_incoming_cpu == cpu:
                return sk
            if first_valid_sk is None:
                first_valid_sk = sk
        i += 1
        if i >= num_socks:
            i = 0
        if i == j:
            break
    return first_valid_sk


def reuseport_select_sock(sk: Sock, hash: int, skb: Skb | None, hdr_len: int) -> SelectResult:
    """Select a socket from the group of `sk`: the program first, the hash when it gives none."""
    reuse = sk.sk_reuseport_cb
    sk2: SelectResult = None
    # if memory allocation failed or add call is not yet complete
    if reuse is None:
        return None

    prog = reuse.prog
    socks = reuse.num_socks
    if socks:
        if prog is not None and skb is not None:
            if prog.type == BPF_PROG_TYPE_SK_REUSEPORT:
                sk2 = bpf_run_sk_reuseport(reuse, sk, prog, skb, None, hash)
            else:
                sk2 = run_bpf_filter(reuse, socks, prog, skb, hdr_len)
        # no bpf or invalid bpf result: fall back to hash usage
        if sk2 is None:
            sk2 = reuseport_select_sock_by_hash(reuse, hash, socks,
                                                raw_smp_processor_id(sock_net(sk)))
    return sk2


def reuseport_migrate_sock(sk: Sock, migrating_sk: Sock, skb: Skb | None) -> SelectResult:
    """Pick the listener that takes over `migrating_sk` from the closed `sk`; None on failure."""
    reuse = sk.sk_reuseport_cb
    nsk: SelectResult = None
    if reuse is None:
        return None

    socks = reuse.num_socks
    if not socks:
        return _migrate_failure(sk)

    hash = migrating_sk.sk_hash
    prog = reuse.prog
    if prog is None or prog.expected_attach_type != BPF_SK_REUSEPORT_SELECT_OR_MIGRATE:
        if not sock_net(sk).sysctl_tcp_migrate_req:
            return _migrate_failure(sk)
    else:
        nsk = bpf_run_sk_reuseport(reuse, sk, prog, skb if skb is not None else Skb(),
                                   migrating_sk, hash)

    if isinstance(nsk, _Unknown):
        return nsk
    if nsk is None:
        nsk = reuseport_select_sock_by_hash(reuse, hash, socks,
                                            raw_smp_processor_id(sock_net(sk)))
    if nsk is None or isinstance(nsk, ErrPtr):
        return _migrate_failure(sk)
    return nsk


def _migrate_failure(sk: Sock) -> None:
    sock_net(sk).mib["TCPMigrateReqFailure"] += 1
    return None


def reuseport_attach_prog(sk: Sock, prog: BpfProg) -> int:
    if sk_unhashed(sk):
        if not sk.sk_reuseport:
            return -EINVAL
        err = reuseport_alloc(sk, False)
        if err:
            return err
    elif sk.sk_reuseport_cb is None:
        # The socket wasn't bound with SO_REUSEPORT
        return -EINVAL

    reuse = sk.sk_reuseport_cb
    assert reuse is not None
    reuse.prog = prog
    return 0


def reuseport_detach_prog(sk: Sock) -> int:
    reuse = sk.sk_reuseport_cb
    # reuseport_grow() may have detached a closed sk.
    if reuse is None:
        return -ENOENT if sk.sk_reuseport else -EINVAL
    if sk_unhashed(sk) and reuse.num_closed_socks:
        return -ENOENT
    old_prog, reuse.prog = reuse.prog, None
    if old_prog is None:
        return -ENOENT
    return 0
