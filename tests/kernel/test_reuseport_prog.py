"""reuseport_attach_prog, reuseport_detach_prog, reuseport_has_conns_set,
reuseport_update_incoming_cpu."""

from __future__ import annotations

from tracekit.kernel.bpf import BpfProg
from tracekit.kernel.errno import EINVAL, ENOENT
from tracekit.kernel.sock_reuseport import (
    reuseport_alloc,
    reuseport_detach_sock,
    reuseport_attach_prog,
    reuseport_detach_prog,
    reuseport_has_conns,
    reuseport_has_conns_set,
    reuseport_stop_listen_sock,
    reuseport_update_incoming_cpu,
)

PROG = BpfProg.ebpf("p")


def test_attach_unhashed_without_so_reuseport_is_einval(net, make_sock):
    """reuseport_attach_prog: sk_unhashed(sk) && !sk->sk_reuseport -> -EINVAL."""
    sk = make_sock(net, 1)
    sk.hashed, sk.sk_reuseport = False, False
    assert reuseport_attach_prog(sk, PROG) == -EINVAL
    assert sk.sk_reuseport_cb is None


def test_attach_unhashed_allocates_group(net, make_sock):
    """reuseport_attach_prog: sk_unhashed(sk) -> reuseport_alloc(sk, false); prog installed."""
    sk = make_sock(net, 1)
    sk.hashed = False
    assert reuseport_attach_prog(sk, PROG) == 0
    assert sk.sk_reuseport_cb.prog is PROG and sk.sk_reuseport_cb.bind_inany is False


def test_attach_hashed_without_group_is_einval(net, make_sock):
    """reuseport_attach_prog: hashed && !sk_reuseport_cb ("wasn't bound with SO_REUSEPORT")."""
    assert reuseport_attach_prog(make_sock(net, 1), PROG) == -EINVAL


def test_attach_replaces_prog(net, make_group):
    """reuseport_attach_prog: rcu_assign_pointer(reuse->prog, prog) over the old one."""
    socks = make_group(net, 2)
    assert reuseport_attach_prog(socks[1], PROG) == 0
    other = BpfProg.cbpf(((0x06, 0, 0, 1),))
    assert reuseport_attach_prog(socks[0], other) == 0
    assert socks[0].sk_reuseport_cb.prog is other


def test_attach_to_shutdown_sock_moves_it_to_new_group(net, make_group):
    """reuseport_attach_prog on an unhashed, shut-down sk: reuseport_alloc -> reuseport_resurrect
    with NULL: the listeners' prog is not changed."""
    net.sysctl_tcp_migrate_req = 1
    socks = make_group(net, 2)
    old = socks[0].sk_reuseport_cb
    reuseport_stop_listen_sock(socks[0])
    socks[0].hashed = False
    assert reuseport_attach_prog(socks[0], PROG) == 0
    assert socks[0].sk_reuseport_cb is not old and old.prog is None


def test_detach_without_group(net, make_sock):
    """reuseport_detach_prog: !reuse -> sk->sk_reuseport ? -ENOENT : -EINVAL."""
    sk = make_sock(net, 1)
    assert reuseport_detach_prog(sk) == -ENOENT
    sk.sk_reuseport = False
    assert reuseport_detach_prog(sk) == -EINVAL


def test_detach_from_unhashed_sock_of_group_with_closed_socks(net, make_group):
    """reuseport_detach_prog: sk_unhashed(sk) && reuse->num_closed_socks -> -ENOENT."""
    net.sysctl_tcp_migrate_req = 1
    socks = make_group(net, 2)
    socks[0].sk_reuseport_cb.prog = PROG
    reuseport_stop_listen_sock(socks[0])
    socks[0].hashed = False
    assert reuseport_detach_prog(socks[0]) == -ENOENT
    assert socks[1].sk_reuseport_cb.prog is PROG


def test_detach_prog(net, make_group):
    """reuseport_detach_prog: old_prog -> 0 and reuse->prog = NULL; none -> -ENOENT."""
    socks = make_group(net, 2)
    assert reuseport_detach_prog(socks[0]) == -ENOENT
    socks[0].sk_reuseport_cb.prog = PROG
    assert reuseport_detach_prog(socks[1]) == 0
    assert socks[0].sk_reuseport_cb.prog is None
    assert reuseport_detach_prog(socks[1]) == -ENOENT


def test_has_conns_set(net, make_sock, make_group):
    """reuseport_has_conns_set: no sk_reuseport_cb -> return; else reuse->has_conns = 1."""
    lone = make_sock(net, 1)
    reuseport_has_conns_set(lone)
    assert not reuseport_has_conns(lone)
    socks = make_group(net, 2)
    reuseport_has_conns_set(socks[1])
    assert reuseport_has_conns(socks[0])


def test_update_incoming_cpu_without_group(net, make_sock):
    """reuseport_update_incoming_cpu: !sk_reuseport_cb -> WRITE_ONCE(sk->sk_incoming_cpu, val)."""
    sk = make_sock(net, 1)
    reuseport_update_incoming_cpu(sk, 3)
    assert sk.sk_incoming_cpu == 3
    reuseport_alloc(sk, False)
    assert sk.sk_reuseport_cb.incoming_cpu == 1


def test_update_incoming_cpu_counter(net, make_group):
    """reuseport_update_incoming_cpu: old < 0 && val >= 0 -> get; old >= 0 && val < 0 -> put;
    >= 0 to >= 0 and < 0 to < 0 leave the counter alone."""
    socks = make_group(net, 2)
    reuse = socks[0].sk_reuseport_cb
    steps = [(socks[0], 1, 1), (socks[0], 2, 1), (socks[1], 0, 2), (socks[0], -1, 1),
             (socks[0], -5, 1), (socks[1], -1, 0)]
    for sk, val, count in steps:
        reuseport_update_incoming_cpu(sk, val)
        assert sk.sk_incoming_cpu == val and reuse.incoming_cpu == count


def test_update_incoming_cpu_before_6_2_only_sets_the_field(net_5_14, make_group):
    """Before b261eda84ec1, SO_INCOMING_CPU was WRITE_ONCE(sk->sk_incoming_cpu, val) only."""
    socks = make_group(net_5_14, 2)
    reuseport_update_incoming_cpu(socks[0], 1)
    assert socks[0].sk_incoming_cpu == 1 and socks[0].sk_reuseport_cb.incoming_cpu == 0


def test_incoming_cpu_counter_wraps_like_u16(net, make_group):
    """`u16 incoming_cpu`: a put without a matching get (sk_incoming_cpu written behind the
    counter's back, as sk_incoming_cpu_update() does on a connected UDP socket) wraps to 65535."""
    socks = make_group(net, 2)
    socks[1].sk_incoming_cpu = 4
    reuseport_detach_sock(socks[1])
    assert socks[0].sk_reuseport_cb.incoming_cpu == 0xFFFF
