"""UDP with connected sockets: members connect and disconnect, and hash selection skips them.

Sometimes every member is connected at once, and selection finds no socket.
"""

from __future__ import annotations

from collections.abc import Iterator

from tracekit.simulator.workloads.host import Port, SimHost
from tracekit.kernel.sock import TCP_CLOSE, TCP_ESTABLISHED


def udp_connected(host: SimHost) -> Iterator[None]:
    port = Port("udp")
    for _ in range(12):
        host.open(port, bind_inany=True)
    while True:
        connected = [sk for sk in port.members if sk.sk_state == TCP_ESTABLISHED]
        free = [sk for sk in port.members if sk.sk_state != TCP_ESTABLISHED]
        action = int(host.rng.integers(12))
        if action == 11:
            for sk in free:
                host.connect(sk)
        elif action < 5 and free:
            host.connect(free[int(host.rng.integers(len(free)))])
        elif action < 8 and connected:
            host.set_state(connected[int(host.rng.integers(len(connected)))], TCP_CLOSE)
        elif len(port.members) > 2:
            host.close(port, port.members[int(host.rng.integers(len(port.members)))])
            host.open(port, bind_inany=True)
        host.select([port], int(host.rng.integers(100, 1_000)))
        yield
