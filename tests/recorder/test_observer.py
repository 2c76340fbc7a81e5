"""The eBPF observer sees every reuseport selection and changes none."""

from __future__ import annotations

import os
import socket

import pytest

from tracekit.recorder import netns
from tracekit.recorder.observer import Observer, observer_program
from tracekit.recorder.runner import run_in_namespace

pytestmark = [pytest.mark.kernel, pytest.mark.usefixtures("kernel_recording")]


def _observe_tcp(listeners: int, clients: int):
    netns.enter_private_netns()
    observer = Observer()
    group = []
    for _ in range(listeners):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s.bind(("127.0.0.1", 8000))
        s.listen(64)
        group.append(s)
    observer.attach(group[0])
    sent = []
    for i in range(clients):
        os.sched_setaffinity(0, {i % len(os.sched_getaffinity(0) | {0})})
        c = socket.create_connection(("127.0.0.1", 8000))
        sent.append((c.getsockname()[1], sorted(os.sched_getaffinity(0))[0]))
    accepted = {}
    for index, s in enumerate(group):
        s.setblocking(False)
        while True:
            try:
                _conn, peer = s.accept()
            except BlockingIOError:
                break
            accepted[peer[1]] = index
    return observer.drain(), sent, accepted


def test_program_is_whole_instructions():
    assert len(observer_program(3, 4)) % 8 == 0


def test_every_syn_is_recorded_with_hash_and_cpu_and_selection_is_the_kernels_own():
    records, sent, accepted = run_in_namespace(_observe_tcp, 3, 24)
    assert [(r.sport, r.cpu) for r in records] == sent
    assert all(r.saddr == r.daddr == "127.0.0.1" and r.dport == 8000 and r.ip_protocol == socket.IPPROTO_TCP for r in records)
    assert len({r.hash for r in records}) == len(records)
    # SK_PASS without selecting: the kernel used its own hash choice, socks[reciprocal_scale(hash, 3)]
    assert {r.sport: (r.hash * 3) >> 32 for r in records} == accepted


def test_namespace_is_private():
    before = netns.read_sysctl("net.ipv4.tcp_migrate_req")
    flipped = 1 - before

    def flip() -> int:
        netns.enter_private_netns()
        netns.write_sysctl("net.ipv4.tcp_migrate_req", flipped)
        return netns.read_sysctl("net.ipv4.tcp_migrate_req")

    assert run_in_namespace(flip) == flipped
    assert netns.read_sysctl("net.ipv4.tcp_migrate_req") == before
