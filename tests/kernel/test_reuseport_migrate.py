"""reuseport_migrate_sock: which listener takes over a closed listener's connections."""

from __future__ import annotations

from tracekit.kernel.bpf import DROP, UNKNOWN, BpfProg, Skb
from tracekit.kernel.sock import TCP_ESTABLISHED, TCP_NEW_SYN_RECV, Sock
from tracekit.kernel.sock_reuseport import (
    reciprocal_scale,
    reuseport_detach_sock,
    reuseport_migrate_sock,
    reuseport_stop_listen_sock,
)

FAILURE = "TCPMigrateReqFailure"


def child(net, sk_hash: int) -> Sock:
    return Sock(sk_id=1000, sk_net=net, sk_state=TCP_NEW_SYN_RECV, sk_hash=sk_hash)


def closed_group(net, make_group, n=4):
    """n listeners; the first one shut down into the closed section (migration capable)."""
    net.sysctl_tcp_migrate_req = 1
    socks = make_group(net, n)
    reuseport_stop_listen_sock(socks[0])
    return socks


def test_migrate_without_group_is_null_and_not_counted(net, make_sock):
    """reuseport_migrate_sock: !reuse -> goto out (no MIB increment)."""
    sk = make_sock(net, 1)
    assert reuseport_migrate_sock(sk, child(net, 0), None) is None
    assert net.mib[FAILURE] == 0


def test_migrate_with_no_live_listener_fails(net, make_group):
    """reuseport_migrate_sock: !socks -> failure: LINUX_MIB_TCPMIGRATEREQFAILURE++."""
    net.sysctl_tcp_migrate_req = 1
    socks = make_group(net, 1)
    reuseport_stop_listen_sock(socks[0])
    assert reuseport_migrate_sock(socks[0], child(net, 0), None) is None
    assert net.mib[FAILURE] == 1


def test_migrate_without_prog_and_sysctl_fails(net, make_group):
    """reuseport_migrate_sock: no SELECT_OR_MIGRATE prog and !sysctl_tcp_migrate_req -> failure."""
    socks = closed_group(net, make_group)
    net.sysctl_tcp_migrate_req = 0
    assert reuseport_migrate_sock(socks[0], child(net, 0), None) is None
    assert net.mib[FAILURE] == 1


def test_migrate_with_sysctl_hashes_the_child(net, make_group):
    """reuseport_migrate_sock: sysctl -> select_by_hash with hash = migrating_sk->sk_hash."""
    socks = closed_group(net, make_group)
    reuse = socks[1].sk_reuseport_cb
    live = reuse.live()
    for h in (0, 0x40000000, 0x90000000, 0xFFFFFFFF):
        expected = live[reciprocal_scale(h, 3)]
        assert reuseport_migrate_sock(socks[0], child(net, h), None) is expected
    assert net.mib[FAILURE] == 0


def test_migrate_select_prog_still_uses_sysctl(net, make_group):
    """prog->expected_attach_type != SELECT_OR_MIGRATE: the prog is not run; sysctl -> hash."""
    socks = closed_group(net, make_group)
    socks[1].sk_reuseport_cb.prog = BpfProg.ebpf("select-only")
    net.ebpf_policies["select-only"] = lambda md: DROP  # never consulted
    live = socks[1].sk_reuseport_cb.live()
    assert reuseport_migrate_sock(socks[0], child(net, 0), None) is live[0]


def test_migrate_all_established_fails(net, make_group):
    """select_by_hash returns NULL -> IS_ERR_OR_NULL(nsk) -> failure."""
    socks = closed_group(net, make_group, n=2)
    socks[1].sk_state = TCP_ESTABLISHED
    assert reuseport_migrate_sock(socks[0], child(net, 0), None) is None
    assert net.mib[FAILURE] == 1


def migrate_prog_group(net, make_group, policy=None):
    socks = make_group(net, 4)
    socks[0].sk_reuseport_cb.prog = BpfProg.ebpf("mig", migrate=True)
    if policy is not None:
        net.ebpf_policies["mig"] = policy
    reuseport_stop_listen_sock(socks[0])
    return socks


def test_migrate_policy_selects(net, make_group):
    """SELECT_OR_MIGRATE: bpf_run_sk_reuseport(reuse, sk, prog, skb, migrating_sk, hash); an
    empty skb is allocated when none is given."""
    seen = []

    def policy(md):
        seen.append(md)
        return 2

    socks = migrate_prog_group(net, make_group, policy)
    assert reuseport_migrate_sock(socks[0], child(net, 5), None) is socks[2]
    assert (seen[0].migrating_sk, seen[0].hash, seen[0].sk) == (1000, 5, 0)


def test_migrate_policy_pass_falls_back_to_hash(net, make_group):
    """SELECT_OR_MIGRATE, SK_PASS without selection -> NULL -> select_by_hash."""
    socks = migrate_prog_group(net, make_group, lambda md: None)
    live = socks[1].sk_reuseport_cb.live()
    assert reuseport_migrate_sock(socks[0], child(net, 0xFFFFFFFF), Skb()) is live[2]


def test_migrate_policy_drop_fails(net, make_group):
    """SELECT_OR_MIGRATE, SK_DROP -> ERR_PTR -> IS_ERR_OR_NULL -> failure."""
    socks = migrate_prog_group(net, make_group, lambda md: DROP)
    assert reuseport_migrate_sock(socks[0], child(net, 0), None) is None
    assert net.mib[FAILURE] == 1


def test_migrate_unregistered_policy_is_unknown(net, make_group):
    """SELECT_OR_MIGRATE with no policy: UNKNOWN, and no failure is counted."""
    socks = migrate_prog_group(net, make_group)
    assert reuseport_migrate_sock(socks[0], child(net, 0), None) is UNKNOWN
    assert net.mib[FAILURE] == 0


def test_migrate_from_evicted_sock(net, make_group):
    """A closed sk whose group dropped it (reuseport_detach_sock) has no reuse -> NULL, no MIB."""
    socks = closed_group(net, make_group)
    reuseport_detach_sock(socks[0])
    assert reuseport_migrate_sock(socks[0], child(net, 0), None) is None
    assert net.mib[FAILURE] == 0
