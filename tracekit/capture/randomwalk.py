"""A reproducible random walk over the recorder's operations, for differential testing.

random_scenario(seed, steps) gives the same Scenario for the same seed (and CPU count): a TCP group
and a UDP group on loopback whose members come and go (listen, close, shutdown, listen again),
tcp_migrate_req toggled, SO_INCOMING_CPU set on some TCP listeners, connected UDP sockets, and
connections and datagrams sent from random CPUs. Classic BPF is left to the scenario library: a
cBPF program replaces the observer, so its group's hashes could not be recorded. SO_INCOMING_CPU
stays off UDP sockets: there it also raises the socket's lookup score (compute_score), which
mixes with 6.18's split groups in ways beyond reuseport itself.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field

from tracekit.capture.scenario import Scenario, Step

ADDR, TCP_PORT, UDP_PORT = "127.0.0.1", 7000, 7001
PEER_PORTS = (9100, 9101, 9102, 9103)
MAX_TCP, MAX_UDP = 6, 5


@dataclass
class _Walk:
    rng: random.Random
    cpus: int
    steps: list[Step] = field(default_factory=list)
    tcp: dict[str, str] = field(default_factory=dict)  # name -> "live" | "shut"
    udp: dict[str, int | None] = field(default_factory=dict)  # name -> connected peer port
    migrate: bool = False
    made: int = 0

    def add(self, op: str, **args) -> None:
        self.steps.append(Step(op, args))

    def cpu(self) -> int:
        return self.rng.randrange(self.cpus)

    def name(self, prefix: str) -> str:
        self.made += 1
        return f"{prefix}{self.made}"

    def options(self) -> dict:
        return {"SO_INCOMING_CPU": self.cpu()} if self.rng.random() < 0.15 else {}

    def moves(self) -> list:
        live = [n for n, s in self.tcp.items() if s == "live"]
        shut = [n for n, s in self.tcp.items() if s == "shut"]
        unconnected = [n for n, p in self.udp.items() if p is None]
        free_peers = [p for p in PEER_PORTS if p not in self.udp.values()]
        moves = [(3, self.toggle_migrate)]
        if len(self.tcp) < MAX_TCP:
            moves.append((6, self.add_tcp))
        if live:
            moves += [(10, self.clients), (3, self.accept), (3, self.close_tcp), (2, self.shutdown), (1, self.incoming_cpu)]
        if shut:
            moves += [(2, self.relisten), (1, self.close_tcp)]
        if len(self.udp) < MAX_UDP:
            moves.append((4, self.add_udp))
        if self.udp:
            moves += [(8, self.datagrams), (2, self.close_udp)]
        if unconnected and free_peers:
            moves.append((2, self.connect_udp))
        return moves

    def step(self) -> None:
        moves = self.moves()
        weights = [w for w, _ in moves]
        self.rng.choices([m for _, m in moves], weights)[0]()

    def toggle_migrate(self) -> None:
        self.migrate = not self.migrate
        self.add("sysctl", name="net.ipv4.tcp_migrate_req", value=int(self.migrate))

    def add_tcp(self) -> None:
        name = self.name("t")
        self.add("open", sock=name, proto="tcp", addr=ADDR, port=TCP_PORT, options=self.options())
        self.tcp[name] = "live"

    def clients(self) -> None:
        count = self.rng.randint(1, 4)
        self.add("clients", addr=ADDR, port=TCP_PORT, count=count, cpu=[self.cpu() for _ in range(count)])

    def accept(self) -> None:
        name = self.rng.choice(sorted(n for n, s in self.tcp.items() if s == "live"))
        self.add("accept", sock=name, count=self.rng.choice(["all", 1]))

    def close_tcp(self) -> None:
        name = self.rng.choice(sorted(self.tcp))
        self.add("close", sock=name, cpu=self.cpu())
        del self.tcp[name]

    def shutdown(self) -> None:
        name = self.rng.choice(sorted(n for n, s in self.tcp.items() if s == "live"))
        self.add("shutdown", sock=name, how="rdwr", cpu=self.cpu())
        self.tcp[name] = "shut"

    def relisten(self) -> None:
        name = self.rng.choice(sorted(n for n, s in self.tcp.items() if s == "shut"))
        self.add("listen", sock=name)
        self.tcp[name] = "live"

    def incoming_cpu(self) -> None:
        names = sorted(n for n, s in self.tcp.items() if s == "live")
        self.add("setsockopt", sock=self.rng.choice(names), name="SO_INCOMING_CPU", value=self.cpu())

    def add_udp(self) -> None:
        name = self.name("u")
        self.add("open", sock=name, proto="udp", addr=ADDR, port=UDP_PORT)
        self.udp[name] = None

    def close_udp(self) -> None:
        name = self.rng.choice(sorted(self.udp))
        self.add("close", sock=name, cpu=self.cpu())
        del self.udp[name]

    def connect_udp(self) -> None:
        name = self.rng.choice(sorted(n for n, p in self.udp.items() if p is None))
        peer = self.rng.choice([p for p in PEER_PORTS if p not in self.udp.values()])
        self.add("connect", sock=name, addr=ADDR, port=peer)
        self.udp[name] = peer

    def datagrams(self) -> None:
        count = self.rng.randint(1, 4)
        src_ports = [self.rng.choice((0, 0) + PEER_PORTS) for _ in range(count)]
        payload = [bytes([self.rng.randrange(256)]).hex() for _ in range(count)]
        self.add("datagrams", addr=ADDR, port=UDP_PORT, count=count, cpu=[self.cpu() for _ in range(count)], src_ports=src_ports, payload=payload)


def random_scenario(seed: int, steps: int, *, cpus: int | None = None) -> Scenario:
    """The random walk for `seed`: `steps` operations (each may send several connections)."""
    walk = _Walk(random.Random(seed), cpus or len(os.sched_getaffinity(0)))
    for _ in range(steps):
        walk.step()
    return Scenario(
        name=f"random-{seed}-{steps}",
        description=f"random walk, seed {seed}, {steps} steps",
        steps=tuple(walk.steps),
    )
