"""Socket-layer behaviour: which sockets form a group, lookup across families, migration, UDP."""

from __future__ import annotations

from tracekit.kernel.net import Net
from tracekit.kernel.profiles import PROFILES
from tracekit.kernel.sock_reuseport import reciprocal_scale
from tracekit.kernel.socket_layer import Host


def listener(h: Host, sk: int, addr: str, port: int = 8080, family: int = 4, proto: str = "tcp",
             **opts: int) -> None:
    h.socket(sk, proto, family)
    h.setsockopt(sk, "SO_REUSEPORT", 1, None, 0)
    for name, value in opts.items():
        h.setsockopt(sk, name, value, None, 0)
    h.bind(sk, addr, port, 0)
    if proto == "tcp":
        h.listen(sk, 0)


def group_of(h: Host, sk: int) -> list[int]:
    return [s.sk_id for s in h.socks[sk].sk.sk_reuseport_cb.live()]


def migrating_group(addr: str, family: int = 4) -> Host:
    """Listeners 1, 2, 3 on addr:8080, tcp_migrate_req on."""
    h = Host()
    for sk in (1, 2, 3):
        listener(h, sk, addr, family=family)
    h.sysctl("net.ipv4.tcp_migrate_req", 1)
    return h


def hash_for_slot(slot: int, n: int) -> int:
    h = -(-(slot << 32) // n)
    assert reciprocal_scale(h, n) == slot
    return h


def test_same_address_and_port_form_one_group_with_bind_inany_for_the_wildcard():
    h = Host()
    for sk in (1, 2, 3):
        listener(h, sk, "0.0.0.0")
    assert group_of(h, 1) == [1, 2, 3]
    assert h.socks[1].sk.sk_reuseport_cb.bind_inany


def test_address_v6only_and_device_split_groups():
    h = Host()
    listener(h, 1, "127.0.0.1")
    listener(h, 2, "127.0.0.2")
    listener(h, 3, "::", family=6)
    listener(h, 4, "::", family=6, IPV6_V6ONLY=1)
    listener(h, 5, "127.0.0.1", SO_BINDTODEVICE=1)
    ids = {h.socks[sk].sk.sk_reuseport_cb.reuseport_id for sk in (1, 2, 3, 4, 5)}
    assert len(ids) == 5
    assert not h.socks[1].sk.sk_reuseport_cb.bind_inany


def test_dual_stack_listener_takes_ipv4_unless_v6only():
    h = Host()
    listener(h, 1, "::", family=6)
    assert h.syn("127.0.0.1", 8080, "127.0.0.1", 40000, 7, 0, b"").sk == 1
    h2 = Host()
    listener(h2, 1, "::", family=6, IPV6_V6ONLY=1)
    pick = h2.syn("127.0.0.1", 8080, "127.0.0.1", 40000, 7, 0, b"")
    assert pick.sk == -1 and pick.reason == "no-listener"


def test_ipv4_group_wins_over_an_earlier_dual_stack_group():
    h = Host()
    listener(h, 1, "::", family=6)
    listener(h, 2, "0.0.0.0")
    assert h.syn("127.0.0.1", 8080, "127.0.0.1", 40000, 7, 0, b"").sk == 2


def test_exact_address_bucket_before_wildcard():
    h = Host()
    listener(h, 1, "0.0.0.0")
    listener(h, 2, "127.0.0.1")
    assert h.syn("127.0.0.1", 8080, "127.0.0.1", 40000, 7, 0, b"").sk == 2
    assert h.syn("127.0.0.2", 8080, "127.0.0.1", 40001, 7, 0, b"").sk == 1


def test_close_migrates_queue_in_order_with_tcp_migrate_req():
    h = Host()
    for sk in (1, 2, 3):
        listener(h, sk, "127.0.0.1")
    h.sysctl("net.ipv4.tcp_migrate_req", 1)
    flows = []
    for i in range(4):
        pick = h.syn("127.0.0.1", 8080, "127.0.0.1", 40000 + i, hash_for_slot(0, 3) + i, 0, b"")
        assert pick.sk == 1
        flows.append(40000 + i)
    h.close(1, cpu=2)
    # sk 3 moved into slot 0; slot 0 of 2 sockets for these hashes
    assert group_of(h, 2) == [3, 2]
    assert [m.flow[3] for m in h.migrations] == flows
    assert all(m.to == 3 for m in h.migrations)
    assert [c.flow[3] for c in h.socks[3].accept_queue] == flows
    assert h.net.mib["TCPMigrateReqSuccess"] == 4
    exp = h.accept(3, "127.0.0.1", 8080, "127.0.0.1", 40000)
    assert exp.expected == 3 and exp.pick.migrated_from == (1, None, 2)


def test_migration_from_a_wildcard_listener_picks_by_the_childs_sk_hash():
    # the SYN's hash was computed with INADDR_ANY / in6addr_any as destination (the wildcard
    # bucket's lookup); migration uses the child's sk_hash over the real 4-tuple: the trace's
    # `sk_hash`. Recorded on 6.18: story-rolling-restart-wildcard
    for addr, family in (("0.0.0.0", 4), ("::", 6)):
        h = migrating_group(addr, family)
        # queued on sk 1 by the lookup hash; after sk 1 closes the group is [3, 2]
        pick = h.syn("127.0.0.1", 8080, "127.0.0.1", 40000, hash_for_slot(0, 3), 0, b"",
                     sk_hash=hash_for_slot(1, 2))
        assert pick.sk == 1
        h.syn("127.0.0.1", 8080, "127.0.0.1", 40001, hash_for_slot(0, 3), 0, b"",
              sk_hash=hash_for_slot(0, 2))
        h.close(1, cpu=0)
        assert group_of(h, 2) == [3, 2]
        assert [(m.flow[3], m.to, m.unknown) for m in h.migrations] == [(40000, 2, None), (40001, 3, None)]
        assert h.accept(2, "127.0.0.1", 8080, "127.0.0.1", 40000).expected == 2
        assert h.accept(3, "127.0.0.1", 8080, "127.0.0.1", 40001).expected == 3


def test_exact_address_listener_migrates_by_the_lookup_hash():
    # bound to the flow's destination: the lookup hash is the child's sk_hash; a trace's
    # sk_hash column is not consulted
    h = migrating_group("127.0.0.1")
    h.syn("127.0.0.1", 8080, "127.0.0.1", 40000, hash_for_slot(0, 3), 0, b"", sk_hash=hash_for_slot(1, 2))
    h.close(1, cpu=0)
    assert [(m.to, m.unknown) for m in h.migrations] == [(3, None)]


def test_migration_from_a_wildcard_listener_without_sk_hash_is_unknown():
    for addr, family in (("0.0.0.0", 4), ("::", 6)):
        h = migrating_group(addr, family)
        assert h.syn("127.0.0.1", 8080, "127.0.0.1", 40000, hash_for_slot(0, 3), 0, b"").sk == 1
        h.close(1, cpu=0)
        assert [m.unknown for m in h.migrations] == ["no-hash"]
        assert h.accept(3, "127.0.0.1", 8080, "127.0.0.1", 40000).unknown == "no-hash"
    h = Host()  # one listener left: every hash gives it
    for sk in (1, 2):
        listener(h, sk, "0.0.0.0")
    h.sysctl("net.ipv4.tcp_migrate_req", 1)
    h.syn("127.0.0.1", 8080, "127.0.0.1", 40000, hash_for_slot(0, 2), 0, b"")
    h.close(1, cpu=0)
    assert [(m.to, m.unknown) for m in h.migrations] == [(2, None)]


def test_close_without_migration_resets_the_queue():
    h = Host()
    for sk in (1, 2):
        listener(h, sk, "127.0.0.1")
    h.syn("127.0.0.1", 8080, "127.0.0.1", 40000, hash_for_slot(0, 2), 0, b"")
    h.close(1, cpu=0)
    assert h.reset("127.0.0.1", 8080, "127.0.0.1", 40000).expected == -1


def test_shutdown_and_listen_again_rejoins_the_same_group():
    h = Host()
    for sk in (1, 2, 3):
        listener(h, sk, "127.0.0.1")
    h.sysctl("net.ipv4.tcp_migrate_req", 1)
    h.shutdown(1, 2, cpu=0)
    reuse = h.socks[2].sk.sk_reuseport_cb
    assert [s.sk_id for s in reuse.closed()] == [1]
    h.listen(1, 0)
    assert group_of(h, 2) == [3, 2, 1] and reuse.num_closed_socks == 0


def test_udp_connect_detaches_on_newest_profile_and_gets_its_flow():
    h = Host()
    for sk in (1, 2, 3):
        listener(h, sk, "127.0.0.1", port=9001, proto="udp")
    h.connect(3, "127.0.0.1", 9100)
    assert group_of(h, 1) == [1, 2]
    assert h.datagram("127.0.0.1", 9001, "127.0.0.1", 9100, 5, 0, b"x").reason == "connected"
    other = h.datagram("127.0.0.1", 9001, "127.0.0.1", 9200, hash_for_slot(1, 2), 0, b"x")
    assert other.sk == 2


def test_udp_connect_keeps_membership_before_hash4():
    h = Host(Net(profile=PROFILES[0]))
    for sk in (1, 2, 3):
        listener(h, sk, "127.0.0.1", port=9001, proto="udp")
    h.connect(3, "127.0.0.1", 9100)
    assert group_of(h, 1) == [1, 2, 3]
    # the ESTABLISHED socket in slot 2 is skipped: wraps to slot 0
    pick = h.datagram("127.0.0.1", 9001, "127.0.0.1", 9200, hash_for_slot(2, 3), 0, b"x")
    assert pick.sk == 1 and pick.reason == "established-skip"


def test_connected_udp_socket_takes_the_cpu_of_its_datagrams():
    # seen on 6.18 (random walk seed 28): receiving sets the connected socket's sk_incoming_cpu
    # without counting it in its group; its close then puts the count back to 0, so the other
    # member's SO_INCOMING_CPU stops mattering and the plain hash decides
    h = Host()
    listener(h, 1, "127.0.0.1", port=9001, proto="udp")
    h.connect(1, "127.0.0.1", 9100)
    listener(h, 2, "127.0.0.1", port=9001, proto="udp", SO_INCOMING_CPU=0)  # group [1, 2]
    listener(h, 3, "127.0.0.1", port=9001, proto="udp")
    reuse = h.socks[2].sk.sk_reuseport_cb
    assert group_of(h, 2) == [1, 2, 3] and reuse.incoming_cpu == 1
    assert h.datagram("127.0.0.1", 9001, "127.0.0.1", 9100, None, 1, b"x").reason == "connected"
    assert h.socks[1].sk.sk_incoming_cpu == 1 and reuse.incoming_cpu == 1
    h.close(1, cpu=0)
    assert group_of(h, 2) == [3, 2] and reuse.incoming_cpu == 0
    pick = h.datagram("127.0.0.1", 9001, "127.0.0.1", 20000, hash_for_slot(0, 2), 0, b"x")
    assert pick.sk == 3 and pick.reason == "hash"


def test_wildcard_udp_connect_rehashes_to_the_source_address():
    h = Host()
    for sk in (1, 2):
        listener(h, sk, "0.0.0.0", port=9001, proto="udp")
    h.connect(2, "127.0.0.1", 9100)
    assert str(h.socks[2].laddr) == "127.0.0.1" and h.socks[2].sk.sk_reuseport_cb is None


def test_incoming_cpu_preference_in_hash_selection():
    h = Host()
    for sk in (1, 2, 3):
        listener(h, sk, "127.0.0.1")
        h.setsockopt(sk, "SO_INCOMING_CPU", sk, None, 0)
    pick = h.syn("127.0.0.1", 8080, "127.0.0.1", 40000, hash_for_slot(0, 3), 3, b"")
    assert pick.sk == 3 and pick.reason == "incoming-cpu"
    # a CPU nobody prefers: the first valid socket from the hash slot
    assert h.syn("127.0.0.1", 8080, "127.0.0.1", 40001, hash_for_slot(1, 3), 9, b"").sk == 2
    # no CPU in the trace while SO_INCOMING_CPU matters: unknown
    assert h.syn("127.0.0.1", 8080, "127.0.0.1", 40002, 1, None, b"").unknown == "no-cpu"


def test_tcp_compute_score_gives_incoming_cpu_a_bonus():
    h = Host()
    for sk in (1, 2):  # two listeners without SO_REUSEPORT; sk 2 is hashed last (bucket head)
        h.socket(sk, "tcp", 4)
        h.bind(sk, "127.0.0.1", 8080, 0)
    h.setsockopt(1, "SO_INCOMING_CPU", 4, None, 0)
    h.listen(1, 0)
    h.listen(2, 0)
    assert h.syn("127.0.0.1", 8080, "127.0.0.1", 40000, 1, 0, b"").sk == 2
    pick = h.syn("127.0.0.1", 8080, "127.0.0.1", 40001, 1, 4, b"")
    assert pick.sk == 1 and pick.reason == "lookup"


def test_no_hash_is_unknown_unless_every_hash_agrees():
    h = Host()
    listener(h, 1, "127.0.0.1")
    assert h.syn("127.0.0.1", 8080, "127.0.0.1", 40000, None, 0, b"").sk == 1
    listener(h, 2, "127.0.0.1")
    assert h.syn("127.0.0.1", 8080, "127.0.0.1", 40001, None, 0, b"").unknown == "no-hash"


def test_udp_bind_after_connect_joins_the_first_match_of_the_primary_slot():
    # udp_reuseport_add_sock() walks the port's primary slot, where sk_add_node_rcu() puts IPv4
    # sockets at the head and IPv6 reuseport ones at the tail; a connected socket left its group
    # (udp_lib_hash4) but stays in the slot, and as first match it gets a new group with the
    # newcomer. Recorded on 6.18 (groups a, b; one connects; c binds)
    cases = [  # (address, family, connecting socket, group of the newcomer 3)
        ("127.0.0.1", 4, 2, [2, 3]),  # IPv4 primary [b, a]: b first
        ("127.0.0.1", 4, 1, [2, 3]),  # IPv4 [b, a]: b, unconnected, first
        ("::1", 6, 2, [1, 3]),  # IPv6 primary [a, b]: a first
        ("::1", 6, 1, [1, 3]),  # IPv6 [a, b]: a, connected, first: a new group
    ]
    for addr, family, connecting, expected in cases:
        h = Host()
        for sk in (1, 2):
            listener(h, sk, addr, port=9001, family=family, proto="udp")
        h.connect(connecting, addr, 9100)
        listener(h, 3, addr, port=9001, family=family, proto="udp")
        assert group_of(h, 3) == expected, (addr, connecting)


def test_ipv6_udp_datagrams_after_rebind_go_to_the_oldest_sockets_group():
    # hslot2 [a, b, c]: a's group [a, c] selects, and has connections, so scoring goes on but
    # nothing scores higher for an unconnected peer
    h = Host()
    for sk in (1, 2):
        listener(h, sk, "::1", port=9001, family=6, proto="udp")
    h.connect(2, "::1", 9100)
    listener(h, 3, "::1", port=9001, family=6, proto="udp")
    assert h.datagram("::1", 9001, "::1", 20000, hash_for_slot(0, 2), 0, b"x").sk == 1
    assert h.datagram("::1", 9001, "::1", 20001, hash_for_slot(1, 2), 0, b"x").sk == 3
    assert h.datagram("::1", 9001, "::1", 9100, 5, 0, b"x").sk == 2


def test_udp_rescore_of_a_group_pick_per_profile():
    """udp4_lib_lookup2() with a group that has connections: the group's first member scores 3 (its
    sk_incoming_cpu is the arrival's CPU, set without being counted in the group), the hash picks sk 2
    (score 2), and sk 4, outside the group later in the slot, scores 3. Before 6.5 the pick keeps
    the first member's 3; 6.5 takes the pick's own 2, so sk 4 wins; 6.10 keeps the higher."""
    from ipaddress import IPv4Address

    from tracekit.kernel.bpf import Skb
    from tracekit.kernel.socket_layer.lookup import udp_lookup2
    from tracekit.kernel.profiles import profile_by_name

    winners = {}
    for name in ("6.2", "6.5", "6.10"):
        h = Host(Net(profile=profile_by_name(name)))
        for sk in (1, 2, 3):
            listener(h, sk, "127.0.0.1", port=9001, proto="udp")
        h.connect(3, "127.0.0.1", 9100)
        h.socks[1].sk.sk_incoming_cpu = 0
        outsider = Host(Net(profile=profile_by_name(name)))
        outsider.socket(4, "udp", 4)
        outsider.setsockopt(4, "SO_INCOMING_CPU", 0, None, 0)
        outsider.bind(4, "127.0.0.1", 9001, 0)
        bucket = [h.socks[1], outsider.socks[4]]
        local = IPv4Address("127.0.0.1")
        chosen, _ = udp_lookup2(h.socks, bucket, local, 9200, local, 9001, 1, 0, hash_for_slot(1, 3),
                                Skb(payload=b"x", len=1, protocol=17, cpu=0))
        winners[name] = chosen.sk_id
    assert winners == {"6.2": 2, "6.5": 4, "6.10": 2}
