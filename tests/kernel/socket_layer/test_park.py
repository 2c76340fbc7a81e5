"""Departed sockets kept as plain values (`Host.park`) come back exactly as they were, and only
sockets nothing else can reach are parked; `replace_pick` copies like `dataclasses.replace`."""

from __future__ import annotations

import dataclasses

import pytest

from tracekit.kernel.sock import TCP_CLOSE
from tracekit.kernel.socket_layer import Host
from tracekit.kernel.socket_layer import kernel_calls as kc
from tracekit.kernel.socket_layer.selection import Pick, replace_pick


def fields_of(h: Host, sk: int) -> tuple[dict, dict]:
    s = h.sock(sk)
    sock = {f.name: getattr(s.sk, f.name) for f in dataclasses.fields(s.sk)}
    socket = {f.name: getattr(s, f.name) for f in dataclasses.fields(s) if f.name != "sk"}
    socket["accept_queue"] = list(socket["accept_queue"])
    return sock, socket


def group_with_departed() -> Host:
    """sk 1, 2, 3 in one group; sk 2 (UDP, on cpu 3, closed) leaves it; sk 9 is a migration child."""
    h = Host()
    kc.reuseport_alloc(h, 1, 0, "tcp")
    kc.reuseport_add_sock(h, 2, 1, 0, "udp")
    kc.reuseport_add_sock(h, 3, 1, 0, "tcp")
    kc.reuseport_update_incoming_cpu(h, 2, 3)
    kc.sk_state(h, 2, TCP_CLOSE)
    kc.reuseport_detach_sock(h, 2)
    h.sysctl("net.ipv4.tcp_migrate_req", 1)
    kc.reuseport_stop_listen_sock(h, 3, "tcp")
    kc.reuseport_migrate_sock(h, 3, 9, 0x12345678, 1)
    return h


def test_a_parked_socket_comes_back_as_it_was():
    h = group_with_departed()
    before = {sk: fields_of(h, sk) for sk in (2, 9)}
    h.park()
    assert set(h.parked) == {2, 9} and 2 not in h.socks and 9 not in h.socks
    for sk in (2, 9):
        assert fields_of(h, sk) == before[sk]
        assert h.sock(sk).sk.sk_net is h.net
    assert not h.parked


def test_members_and_bound_hosts_are_not_parked():
    h = group_with_departed()
    h.departing.update({1, 3})  # 1 is live, 3 sits in the closed section: both in the group
    h.park()
    assert {1, 3} <= set(h.socks) and not {1, 3} & set(h.parked)
    bound = Host()
    bound.socket(5, "udp", 4)
    bound.bind(5, "127.0.0.1", 53, 0)
    bound.departing.add(5)
    bound.park()
    assert 5 in bound.socks and not bound.parked


def test_a_new_socket_replaces_a_parked_one():
    h = group_with_departed()
    h.park()
    h.socket(2, "tcp", 6)
    assert 2 not in h.parked and h.sock(2).family == 6 and h.sock(2).sk.sk_incoming_cpu == -1


def test_replace_pick_is_dataclasses_replace():
    pick = Pick(sk=3, reason="hash", group="group 0", socks=(1, 3), hash=7)
    changed = replace_pick(pick, sk=-1, reason="migration", seq=12)
    assert changed == dataclasses.replace(pick, sk=-1, reason="migration", seq=12)
    assert pick.sk == 3 and changed.socks == (1, 3)
    with pytest.raises(TypeError, match="no field"):
        replace_pick(pick, colour="red")
