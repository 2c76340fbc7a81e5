"""The group array: reuseport_alloc, _grow, _add_sock, _resurrect, _detach_sock, _stop_listen_sock.

Each test names the lines of net/core/sock_reuseport.c it walks.
"""

from __future__ import annotations

from tracekit.kernel.bpf import BpfProg
from tracekit.kernel.errno import EBUSY, ENOMEM
from tracekit.kernel.net import Net
from tracekit.kernel.sock import IPPROTO_UDP
from tracekit.kernel.sock_reuseport import (
    INIT_SOCKS,
    reuseport_add_sock,
    reuseport_alloc,
    reuseport_detach_sock,
    reuseport_has_conns_set,
    reuseport_stop_listen_sock,
)


def ids(socks) -> list[int]:
    return [sk.sk_id for sk in socks]


# --- reuseport_alloc --------------------------------------------------------------------------

def test_alloc_new_group(net, make_sock):
    """reuseport_alloc: !reuse -> __reuseport_alloc(INIT_SOCKS), id from the IDA, socks[0] = sk."""
    sk = make_sock(net, 1)
    assert reuseport_alloc(sk, True) == 0
    reuse = sk.sk_reuseport_cb
    assert reuse.max_socks == INIT_SOCKS == 128
    assert (reuse.num_socks, reuse.num_closed_socks) == (1, 0)
    assert reuse.socks[0] is sk
    assert reuse.bind_inany is True
    assert reuse.reuseport_id == 0
    assert reuse.prog is None and reuse.has_conns is False


def test_alloc_existing_group_only_sets_bind_inany_when_true(net, make_sock):
    """reuseport_alloc: reuse exists -> `if (bind_inany) reuse->bind_inany = bind_inany;`."""
    sk = make_sock(net, 1)
    reuseport_alloc(sk, False)
    reuse = sk.sk_reuseport_cb
    assert reuseport_alloc(sk, True) == 0
    assert sk.sk_reuseport_cb is reuse and reuse.bind_inany is True
    # False must not overwrite what the bind/hash path set.
    assert reuseport_alloc(sk, False) == 0
    assert reuse.bind_inany is True and reuse.num_socks == 1


def test_alloc_resurrects_shutdown_sock_into_new_group(net, make_group):
    """reuseport_alloc: reuse->num_closed_socks -> reuseport_resurrect(sk, reuse, NULL, bind_inany):
    !reuse -> a new group with a new id; sk leaves the old group's closed section."""
    net.sysctl_tcp_migrate_req = 1
    a, b = make_group(net, 2)
    old = a.sk_reuseport_cb
    reuseport_stop_listen_sock(a)
    assert ids(old.closed()) == [0]
    assert reuseport_alloc(a, True) == 0
    new = a.sk_reuseport_cb
    assert new is not old
    assert new.reuseport_id == 1 and new.bind_inany is True
    assert ids(new.live()) == [0]
    assert ids(old.live()) == [1] and old.closed() == []


def test_alloc_counts_incoming_cpu_from_6_2(net, net_5_14, make_sock):
    """6.2 reuseport_alloc: reuseport_get_incoming_cpu(sk, reuse) after socks[0] = sk."""
    sk = make_sock(net, 1, incoming_cpu=3)
    reuseport_alloc(sk, False)
    assert sk.sk_reuseport_cb.incoming_cpu == 1
    old = make_sock(net_5_14, 2, incoming_cpu=3)
    reuseport_alloc(old, False)
    assert old.sk_reuseport_cb.incoming_cpu == 0


# --- reuseport_grow ---------------------------------------------------------------------------

def test_grow_doubles_and_keeps_both_sections(net, make_group, make_sock):
    """reuseport_add_sock: num_socks + num_closed_socks == max_socks -> reuseport_grow():
    more_socks_size = max_socks * 2; memcpy of the live section to the front and of the closed
    section to the back; every member's sk_reuseport_cb points at more_reuse; fields copied."""
    net.sysctl_tcp_migrate_req = 1
    socks = make_group(net, 128)
    old = socks[0].sk_reuseport_cb
    old.prog = BpfProg.ebpf("p")
    reuseport_has_conns_set(socks[0])
    reuseport_stop_listen_sock(socks[5])  # socks[127] moves into slot 5
    reuseport_stop_listen_sock(socks[9])
    assert old.num_socks + old.num_closed_socks == old.max_socks == 128
    live_before, closed_before = ids(old.live()), ids(old.closed())

    new_sk = make_sock(net, 999)
    assert reuseport_add_sock(new_sk, socks[0], False) == 0
    reuse = socks[0].sk_reuseport_cb
    assert reuse is not old and reuse.max_socks == 256
    assert ids(reuse.live()) == live_before + [999]
    assert ids(reuse.closed()) == closed_before == [9, 5]
    assert all(sk.sk_reuseport_cb is reuse for sk in socks + [new_sk])
    assert (reuse.prog, reuse.reuseport_id, reuse.has_conns) == (old.prog, old.reuseport_id, True)


def test_grow_copies_incoming_cpu(net, make_group, make_sock):
    """6.2 reuseport_grow: more_reuse->incoming_cpu = reuse->incoming_cpu."""
    socks = make_group(net, 127)
    reuseport_add_sock(make_sock(net, 500, incoming_cpu=1), socks[0], False)
    reuseport_add_sock(make_sock(net, 501, incoming_cpu=2), socks[0], False)
    reuse = socks[0].sk_reuseport_cb
    assert reuse.max_socks == 256 and reuse.incoming_cpu == 2


def _full_group_at_cap(net, make_group):
    """32768 listeners: the array has grown 128 -> 256 -> ... -> 32768 and is full."""
    socks = make_group(net, 32768)
    reuse = socks[0].sk_reuseport_cb
    assert reuse.max_socks == 32768 and reuse.num_socks == 32768
    return socks


def test_grow_at_u16_cap_without_closed_socks_is_enomem(net, make_group, make_sock):
    """reuseport_grow: more_socks_size (65536) > U16_MAX and !num_closed_socks -> NULL;
    reuseport_add_sock: !reuse -> -ENOMEM; sk is not added."""
    socks = _full_group_at_cap(net, make_group)
    sk = make_sock(net, 10**6)
    assert reuseport_add_sock(sk, socks[0], False) == -ENOMEM
    assert sk.sk_reuseport_cb is None
    assert socks[0].sk_reuseport_cb.num_socks == 32768


def test_grow_at_u16_cap_evicts_a_closed_sock(net, make_group, make_sock):
    """reuseport_grow: more_socks_size > U16_MAX and num_closed_socks -> sk =
    socks[max_socks - num_closed_socks]; sk->sk_reuseport_cb = NULL;
    __reuseport_detach_closed_sock(); return the same reuse, then the new sk is added."""
    net.sysctl_tcp_migrate_req = 1
    socks = _full_group_at_cap(net, make_group)
    reuse = socks[0].sk_reuseport_cb
    reuseport_stop_listen_sock(socks[100])
    reuseport_stop_listen_sock(socks[200])  # the newest closed sk sits at max - num_closed
    assert ids(reuse.closed()) == [200, 100]
    sk = make_sock(net, 10**6)
    assert reuseport_add_sock(sk, socks[0], False) == 0
    assert socks[0].sk_reuseport_cb is reuse and reuse.max_socks == 32768
    assert socks[200].sk_reuseport_cb is None
    assert ids(reuse.closed()) == [100]
    assert reuse.live()[-1] is sk and reuse.num_socks == 32767
    # reuseport_detach_sock: "reuseport_grow() has detached a closed sk" -> nothing to do.
    reuseport_detach_sock(socks[200])
    assert ids(reuse.closed()) == [100]


# --- reuseport_add_sock -----------------------------------------------------------------------

def test_add_sock_allocates_for_sk2_first(net, make_sock):
    """reuseport_add_sock: !sk2->sk_reuseport_cb -> reuseport_alloc(sk2, bind_inany)."""
    sk2, sk = make_sock(net, 1), make_sock(net, 2)
    assert reuseport_add_sock(sk, sk2, True) == 0
    reuse = sk2.sk_reuseport_cb
    assert sk.sk_reuseport_cb is reuse and ids(reuse.live()) == [1, 2]
    assert reuse.bind_inany is True


def test_add_sock_busy_when_old_group_has_others(net, make_group, make_sock):
    """reuseport_add_sock: old_reuse && old_reuse->num_socks != 1 -> -EBUSY."""
    a = make_group(net, 2)
    b = make_group(net, 1, first_id=10)
    assert reuseport_add_sock(a[0], b[0], False) == -EBUSY
    assert a[0].sk_reuseport_cb is a[1].sk_reuseport_cb


def test_add_sock_moves_lone_sock_and_frees_old_group(net, make_sock, make_group):
    """reuseport_add_sock: old_reuse with num_socks == 1 -> sk joins reuse; call_rcu(old_reuse,
    reuseport_free_rcu) -> ida_free(old id): the next group gets that id (lowest first)."""
    group = make_group(net, 2)                  # id 0
    lone = make_sock(net, 7)
    reuseport_alloc(lone, False)                # id 1
    other = make_sock(net, 8)
    reuseport_alloc(other, False)               # id 2
    assert reuseport_add_sock(lone, group[0], False) == 0
    assert ids(group[0].sk_reuseport_cb.live()) == [0, 1, 7]
    assert net.reuseport_ida.used == {0, 2}
    fresh = make_sock(net, 9)
    reuseport_alloc(fresh, False)
    assert fresh.sk_reuseport_cb.reuseport_id == 1


def test_add_sock_resurrects_into_other_group(net, make_group):
    """reuseport_add_sock: old_reuse && old_reuse->num_closed_socks -> reuseport_resurrect(sk,
    old_reuse, reuse, reuse->bind_inany): move sk to reuse; old_reuse freed once empty."""
    net.sysctl_tcp_migrate_req = 1
    a = make_group(net, 1)
    b = make_group(net, 2, first_id=10)
    old = a[0].sk_reuseport_cb
    reuseport_stop_listen_sock(a[0])
    assert reuseport_add_sock(a[0], b[0], False) == 0
    assert ids(b[0].sk_reuseport_cb.live()) == [10, 11, 0]
    assert old.num_socks + old.num_closed_socks == 0
    assert old.reuseport_id not in net.reuseport_ida.used


def test_resurrect_into_same_group(net, make_group):
    """reuseport_resurrect: old_reuse == reuse -> __reuseport_detach_closed_sock() then
    __reuseport_add_sock(): sk leaves the closed section and is appended to the live one."""
    net.sysctl_tcp_migrate_req = 1
    socks = make_group(net, 4)
    reuse = socks[0].sk_reuseport_cb
    reuseport_stop_listen_sock(socks[1])
    assert ids(reuse.live()) == [0, 3, 2]
    assert reuseport_add_sock(socks[1], socks[0], False) == 0
    assert ids(reuse.live()) == [0, 3, 2, 1] and reuse.closed() == []
    assert socks[1].sk_reuseport_cb is reuse


def test_resurrect_keeps_old_group_while_it_has_members(net, make_group):
    """reuseport_resurrect: old_reuse->num_socks + num_closed_socks != 0 -> old group kept."""
    net.sysctl_tcp_migrate_req = 1
    a = make_group(net, 2)
    old = a[0].sk_reuseport_cb
    reuseport_stop_listen_sock(a[0])
    assert reuseport_alloc(a[0], False) == 0
    assert old.reuseport_id in net.reuseport_ida.used and ids(old.live()) == [1]


def test_resurrect_grows_the_target_group(net, make_group, make_sock):
    """reuseport_resurrect: reuse full -> reuseport_grow(reuse) before adding sk."""
    net.sysctl_tcp_migrate_req = 1
    lone = make_group(net, 1, first_id=1000)
    reuseport_stop_listen_sock(lone[0])
    big = make_group(net, 128)
    assert reuseport_add_sock(lone[0], big[0], False) == 0
    reuse = big[0].sk_reuseport_cb
    assert reuse.max_socks == 256 and reuse.live()[-1] is lone[0]


# --- reuseport_detach_sock --------------------------------------------------------------------

def test_detach_swaps_last_live_sock_into_the_hole(net, make_group):
    """__reuseport_detach_sock: socks[i] = socks[num_socks - 1]; num_socks--."""
    socks = make_group(net, 5)
    reuse = socks[0].sk_reuseport_cb
    reuseport_detach_sock(socks[1])
    assert ids(reuse.live()) == [0, 4, 2, 3]
    assert socks[1].sk_reuseport_cb is None
    reuseport_detach_sock(socks[3])  # the last one: no visible move
    assert ids(reuse.live()) == [0, 4, 2]


def test_detach_closed_sock(net, make_group):
    """reuseport_detach_sock: __reuseport_detach_closed_sock() first: socks[i] =
    socks[max_socks - num_closed_socks]; num_closed_socks--; the live section is untouched."""
    net.sysctl_tcp_migrate_req = 1
    socks = make_group(net, 5)
    reuse = socks[0].sk_reuseport_cb
    for sk in socks[1:4]:
        reuseport_stop_listen_sock(sk)
    assert ids(reuse.closed()) == [3, 2, 1]
    reuseport_detach_sock(socks[1])  # the front of the closed section (3) fills its slot
    assert ids(reuse.closed()) == [2, 3]
    assert ids(reuse.live()) == [0, 4]


def test_detach_last_member_frees_group(net, make_group):
    """reuseport_detach_sock: num_socks + num_closed_socks == 0 -> reuseport_free_rcu -> ida_free."""
    socks = make_group(net, 2)
    rid = socks[0].sk_reuseport_cb.reuseport_id
    reuseport_detach_sock(socks[0])
    assert rid in net.reuseport_ida.used
    reuseport_detach_sock(socks[1])
    assert rid not in net.reuseport_ida.used


def test_detach_without_group_is_a_no_op(net, make_sock):
    """reuseport_detach_sock: !reuse -> goto out."""
    sk = make_sock(net, 1)
    reuseport_detach_sock(sk)
    assert sk.sk_reuseport_cb is None


def test_detach_puts_incoming_cpu(net, make_group, make_sock):
    """6.2 __reuseport_detach_sock / __reuseport_detach_closed_sock: reuseport_put_incoming_cpu()."""
    net.sysctl_tcp_migrate_req = 1
    socks = make_group(net, 1)
    a, b = make_sock(net, 1, incoming_cpu=0), make_sock(net, 2, incoming_cpu=1)
    reuseport_add_sock(a, socks[0], False)
    reuseport_add_sock(b, socks[0], False)
    reuse = socks[0].sk_reuseport_cb
    assert reuse.incoming_cpu == 2
    reuseport_stop_listen_sock(a)           # detach (put) + add closed (get)
    assert reuse.incoming_cpu == 2
    reuseport_detach_sock(a)
    reuseport_detach_sock(b)
    assert reuse.incoming_cpu == 0


# --- reuseport_stop_listen_sock ---------------------------------------------------------------

def test_stop_listen_with_sysctl_moves_to_closed_section(net, make_group):
    """reuseport_stop_listen_sock: TCP && sysctl_tcp_migrate_req -> __reuseport_detach_sock +
    __reuseport_add_closed_sock (socks[max_socks - num_closed_socks - 1] = sk)."""
    net.sysctl_tcp_migrate_req = 1
    socks = make_group(net, 3)
    reuse = socks[0].sk_reuseport_cb
    reuseport_stop_listen_sock(socks[0])
    assert ids(reuse.live()) == [2, 1]
    assert reuse.socks[reuse.max_socks - 1] is socks[0]
    assert socks[0].sk_reuseport_cb is reuse


def test_stop_listen_with_migrate_prog_moves_to_closed_section(net, make_group):
    """reuseport_stop_listen_sock: prog->expected_attach_type ==
    BPF_SK_REUSEPORT_SELECT_OR_MIGRATE -> migration capable even without the sysctl."""
    socks = make_group(net, 2)
    reuse = socks[0].sk_reuseport_cb
    reuse.prog = BpfProg.ebpf("migrate", migrate=True)
    reuseport_stop_listen_sock(socks[0])
    assert ids(reuse.closed()) == [0] and ids(reuse.live()) == [1]


def test_stop_listen_not_capable_detaches(net, make_group):
    """reuseport_stop_listen_sock: no sysctl, prog is SELECT only -> reuseport_detach_sock()."""
    socks = make_group(net, 2)
    reuse = socks[0].sk_reuseport_cb
    reuse.prog = BpfProg.ebpf("select")
    reuseport_stop_listen_sock(socks[0])
    assert socks[0].sk_reuseport_cb is None and reuse.closed() == []
    reuse.prog = BpfProg.cbpf(((0x06, 0, 0, 0),))
    reuseport_stop_listen_sock(socks[1])
    assert reuse.num_socks == 0


def test_stop_listen_udp_always_detaches(make_group):
    """reuseport_stop_listen_sock: sk->sk_protocol != IPPROTO_TCP -> reuseport_detach_sock()."""
    udp_net = Net(sysctl_tcp_migrate_req=1)
    socks = make_group(udp_net, 2, protocol=IPPROTO_UDP)
    reuse = socks[0].sk_reuseport_cb
    reuseport_stop_listen_sock(socks[0])
    assert socks[0].sk_reuseport_cb is None and reuse.closed() == []
