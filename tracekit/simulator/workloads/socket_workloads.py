"""Workloads at the socket layer (`tracekit simulate --layer socket`): the traffic the recorder
and application logs see, `syn`/`accept` and `datagram`/`recv`, with the group changes of a
fleet: rolling restarts in steady traffic, or a change every few events.
"""

from __future__ import annotations

from collections.abc import Iterator

from tracekit.simulator.workloads.host import CPUS
from tracekit.simulator.workloads.socket_host import SocketPort, SocketSimHost

__all__ = ["SOCKET_WORKLOADS", "socket_mutation_heavy", "socket_steady"]

RUN = 65_536
SIZES = (2, 12)


def socket_steady(host: SocketSimHost) -> Iterator[None]:
    """A front end between deploys: busy ports, one listener replaced every `RUN` arrivals."""
    web = SocketPort("tcp", "10.0.0.1", 443)
    api = SocketPort("tcp", "10.0.0.1", 8080)
    pinned = SocketPort("tcp", "10.0.0.1", 9000)
    dns = SocketPort("udp", "10.0.0.1", 53)
    for _ in range(8):
        host.open(web)
        host.open(dns)
    for _ in range(16):
        host.open(api)
    for cpu in range(2 * CPUS):  # one worker per CPU, twice over (SO_INCOMING_CPU)
        host.open(pinned, incoming_cpu=cpu % CPUS)
    ports, weights = [web, api, pinned, dns], [0.4, 0.2, 0.2, 0.2]
    turn = 0
    while True:
        host.traffic(ports, RUN, weights)
        port = ports[turn % len(ports)]
        old = port.members[0]
        host.open(port, incoming_cpu=old % CPUS if port is pinned else None)
        host.close(port, old)
        turn += 1
        yield


def socket_mutation_heavy(host: SocketSimHost) -> Iterator[None]:
    """A group change every ten events or so, as the recorder's random walks have: listeners
    and UDP sockets come and go (some pinned to a CPU), a few arrivals between changes."""
    rng = host.rng
    ports = [SocketPort("tcp", "127.0.0.1", 7000), SocketPort("udp", "127.0.0.1", 7001),
             SocketPort("tcp", "::1", 7002), SocketPort("udp", "::1", 7004)]
    for port in ports:
        for _ in range(SIZES[0] + 1):
            host.open(port)
    while True:
        port = ports[int(rng.integers(len(ports)))]
        low, high = SIZES
        if (rng.random() < 0.5 and len(port.members) < high) or len(port.members) <= low:
            host.open(port, incoming_cpu=int(rng.integers(CPUS)) if rng.random() < 0.3 else None)
        else:
            host.close(port, port.members[int(rng.integers(len(port.members)))])
        host.traffic(ports, int(rng.integers(1, 6)))
        yield


SOCKET_WORKLOADS = {"steady": socket_steady, "mutation-heavy": socket_mutation_heavy}
