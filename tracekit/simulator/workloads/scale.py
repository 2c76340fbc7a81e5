"""Scale up and down: groups grow past the kernel's initial array (128) and shrink to nothing.

Members leave from anywhere in the array, so the last one is swapped into the hole and later
hashes land elsewhere; a group whose last member leaves is freed and a new one allocated.
"""

from __future__ import annotations

from collections.abc import Iterator

from tracekit.simulator.workloads.host import MIGRATE_REQ, Port, SimHost

LIMITS = {"tcp": 150, "udp": 40}


def scale(host: SimHost) -> Iterator[None]:
    tcp, udp = Port("tcp"), Port("udp")
    ports = [tcp, udp]
    growing = {"tcp": True, "udp": True}
    host.sysctl(MIGRATE_REQ, 1)
    while True:
        for port in ports:
            size = len(port.members)
            if size >= LIMITS[port.proto]:
                growing[port.proto] = False
            elif size == 0:
                growing[port.proto] = True
            if growing[port.proto]:
                host.open(port)
            else:
                victim = port.members[int(host.rng.integers(size))]
                host.close(port, victim, queued=int(host.rng.integers(0, 3)))
        host.select(ports, int(host.rng.integers(10, 120)))
        yield
