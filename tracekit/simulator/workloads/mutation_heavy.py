"""Mutation-heavy: a group change every 100 events, selections in between.

Each change is one of: a listener joins, a listener closes (its queue migrating), a UDP socket
opens, closes, connects or disconnects, a worker changes its SO_INCOMING_CPU.
"""

from __future__ import annotations

from collections.abc import Iterator

from tracekit.simulator.workloads.host import CPUS, MIGRATE_REQ, Port, SimHost
from tracekit.kernel.sock import TCP_CLOSE, TCP_ESTABLISHED

PERIOD = 100
SIZES = (4, 32)


def mutation_heavy(host: SimHost) -> Iterator[None]:
    tcp, udp = Port("tcp"), Port("udp")
    host.sysctl(MIGRATE_REQ, 1)
    for i in range(16):
        host.open(tcp, incoming_cpu=i % CPUS if i % 2 else None)
    for _ in range(8):
        host.open(udp)
    ports = [tcp, udp]
    while True:
        start = host.rows.next_seq
        _change(host, tcp, udp)
        host.select(ports, PERIOD - (host.rows.next_seq - start))
        yield


def _change(host: SimHost, tcp: Port, udp: Port) -> None:
    rng = host.rng
    action = int(rng.integers(6))
    port = tcp if action < 3 else udp
    low, high = SIZES
    if (action == 0 and len(tcp.members) < high) or len(port.members) <= low:
        host.open(port, incoming_cpu=int(rng.integers(CPUS)) if rng.random() < 0.5 else None)
    elif action in (1, 3):
        host.close(port, port.members[int(rng.integers(len(port.members)))],
                   queued=int(rng.integers(0, 4)))
        if action == 3:
            host.open(udp)
    elif action == 2:
        host.set_incoming_cpu(tcp.members[int(rng.integers(len(tcp.members)))],
                              int(rng.integers(-1, CPUS)))
    else:
        sk = udp.members[int(rng.integers(len(udp.members)))]
        if sk.sk_state == TCP_ESTABLISHED:
            host.set_state(sk, TCP_CLOSE)
        else:
            host.connect(sk)
