"""Classic BPF steering (SO_ATTACH_REUSEPORT_CBPF): a program picks the socket from the payload.

The TCP port's program can answer an index past the last socket, and selection falls back to the
hash; members come and go under the program, and it is detached and attached again.
"""

from __future__ import annotations

from collections.abc import Iterator

from tracekit.simulator.workloads.host import Port, SimHost
from tracekit.kernel.cbpf import (BPF_A, BPF_ABS, BPF_ALU, BPF_AND, BPF_B, BPF_K, BPF_LD, BPF_MOD,
                                  BPF_RET, BPF_W)

# A = payload[0:4] (big-endian) % 8; return A
BY_FIRST_WORD = ((BPF_LD | BPF_W | BPF_ABS, 0, 0, 0), (BPF_ALU | BPF_MOD | BPF_K, 0, 0, 8),
                 (BPF_RET | BPF_A, 0, 0, 0))
# A = payload[1] & 3; return A
BY_SECOND_BYTE = ((BPF_LD | BPF_B | BPF_ABS, 0, 0, 1), (BPF_ALU | BPF_AND | BPF_K, 0, 0, 3),
                  (BPF_RET | BPF_A, 0, 0, 0))


def cbpf(host: SimHost) -> Iterator[None]:
    tcp, udp = Port("tcp"), Port("udp")
    for _ in range(6):
        host.open(tcp)
    for _ in range(4):
        host.open(udp)
    host.attach_prog(tcp.members[0], BY_FIRST_WORD)
    host.attach_prog(udp.members[0], BY_SECOND_BYTE)
    ports = [tcp, udp]
    while True:
        action = int(host.rng.integers(8))
        if action == 0 and len(tcp.members) < 10:
            host.open(tcp)
        elif action == 1 and len(tcp.members) > 3:
            host.close(tcp, tcp.members[int(host.rng.integers(len(tcp.members)))])
        elif action == 2:
            host.detach_prog(tcp.members[0])
            host.select(ports, int(host.rng.integers(50, 300)))
            host.attach_prog(tcp.members[-1], BY_FIRST_WORD)
        host.select(ports, int(host.rng.integers(100, 1_000)))
        yield
