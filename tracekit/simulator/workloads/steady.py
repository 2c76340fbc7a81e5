"""Steady state: a handful of busy ports, many flows, no group changes after start-up.

The shape of a production front end between deploys: selections are nearly every event.
"""

from __future__ import annotations

from collections.abc import Iterator

from tracekit.simulator.workloads.host import CPUS, Port, SimHost

RUN = 65_536


def steady(host: SimHost) -> Iterator[None]:
    web, api, pinned, dns = Port("tcp"), Port("tcp"), Port("tcp"), Port("udp")
    for _ in range(8):
        host.open(web, bind_inany=True)
    for _ in range(32):
        host.open(api)
    for cpu in range(2 * CPUS):  # one worker per CPU, twice over (SO_INCOMING_CPU)
        host.open(pinned, incoming_cpu=cpu % CPUS)
    for _ in range(8):
        host.open(dns, bind_inany=True)
    ports, weights = [web, api, pinned, dns], [0.4, 0.3, 0.2, 0.1]
    while True:
        host.select(ports, RUN, weights)
        yield
