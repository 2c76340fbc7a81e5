"""Rolling restart: every listener is replaced in turn, a new one up before the old one closes.

Rounds alternate `net.ipv4.tcp_migrate_req`: with it, the closing listener's queued connections
migrate to the others (`reuseport_migrate_sock`); without it they are lost (the calls return NULL).
One port pins its workers to CPUs (SO_INCOMING_CPU), as per-CPU worker servers do.
"""

from __future__ import annotations

from collections.abc import Iterator

from tracekit.simulator.workloads.host import CPUS, MIGRATE_REQ, Port, SimHost


def rolling_restart(host: SimHost) -> Iterator[None]:
    plain, pinned = Port("tcp"), Port("tcp")
    for _ in range(8):
        host.open(plain, bind_inany=True)
    for cpu in range(CPUS):
        host.open(pinned, incoming_cpu=cpu)
    ports = [plain, pinned]
    migrate = 1
    while True:
        host.sysctl(MIGRATE_REQ, migrate)
        for port in ports:
            for old in list(port.members):
                host.open(port, incoming_cpu=old.sk_incoming_cpu if port is pinned else None)
                host.select(ports, int(host.rng.integers(20, 200)))
                host.close(port, old, queued=int(host.rng.integers(0, 6)))
                host.select(ports, int(host.rng.integers(100, 800)))
                yield
        migrate = 1 - migrate
