"""A reproducible random walk over the recorder's operations, for differential testing.

random_scenario(seed, steps) gives the same Scenario for the same seed (and CPU count). The walk
runs several reuseport groups at once, each on its own port: TCP and UDP, IPv4, IPv6 and
dual-stack (`::` receiving IPv4), specific and wildcard addresses, up to MAX_MEMBERS sockets each
so the array order and swap-with-last matter. Members come and go (listen, close, shutdown,
listen again; bind, connect, close), tcp_migrate_req is toggled, SO_INCOMING_CPU is set and
cleared, and each traffic step sends up to MAX_BURST connections or datagrams from random CPUs.

Classic BPF groups have no observer (their program replaces it); the recorder re-probes the hash
of their traffic after the walk (tracekit.recorder.reprobe), so programs may return anything: a
result at or past the group's live size makes the kernel fall back to the hash, and migration
from such a group picks by hash too. A syn to a wildcard group carries the re-probed `sk_hash`
of its connection, which migration from a wildcard listener picks by. The walk still keeps a
classic BPF group from emptying and its members from connecting: a later member would make a new
group without the program (the recorder and the independent check key programs by port).

Datagram sources are distinct ports for the whole walk, plus a few peer ports per group for
connected UDP sockets, so every flow of a recording names one datagram's path.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from typing import Callable

from tracekit.recorder.scenario import Scenario, Step

MAX_MEMBERS = 8
MAX_BURST = 12
SOURCE_PORTS = range(20000, 32000)  # below the ephemeral range: never some other socket's port
PEERS_PER_GROUP = 3

# classic BPF (linux/filter.h): opcodes the walk's programs use
LD_W_ABS, LD_H_ABS, LD_B_ABS = 0x20, 0x28, 0x30
ALU_MOD_K, ALU_AND_K, ALU_RSH_K = 0x94, 0x54, 0x74
JMP_JEQ_K, JMP_JGT_K = 0x15, 0x25
RET_A, RET_K = 0x16, 0x06
AD_CPU = (-0x1000 + 36) & 0xFFFFFFFF  # SKF_AD_OFF + SKF_AD_CPU

Insns = list[list[int]]


@dataclass(frozen=True)
class GroupSpec:
    """Where a group's sockets bind, and where its traffic is sent."""

    key: str
    proto: str
    addr: str
    port: int
    dests: tuple[str, ...]
    cbpf: bool = False

    @property
    def family(self) -> int:
        return 6 if ":" in self.addr else 4


GROUPS = (
    GroupSpec("tcp4", "tcp", "127.0.0.1", 7000, ("127.0.0.1",)),
    GroupSpec("udp4", "udp", "127.0.0.1", 7001, ("127.0.0.1",)),
    GroupSpec("tcp6", "tcp", "::1", 7002, ("::1",)),
    GroupSpec("tcp-dual", "tcp", "::", 7003, ("127.0.0.1", "::1")),
    GroupSpec("udp6", "udp", "::1", 7004, ("::1",)),
    GroupSpec("udp-dual", "udp", "::", 7005, ("127.0.0.1", "::1")),
    GroupSpec("tcp4-any", "tcp", "0.0.0.0", 7006, ("127.0.0.1",)),
    GroupSpec("udp4-any", "udp", "0.0.0.0", 7007, ("127.0.0.1",)),
    GroupSpec("tcp4-cbpf", "tcp", "127.0.0.1", 7010, ("127.0.0.1",), cbpf=True),
    GroupSpec("udp4-cbpf", "udp", "127.0.0.1", 7011, ("127.0.0.1",), cbpf=True),
    GroupSpec("udp6-cbpf", "udp", "::1", 7012, ("::1",), cbpf=True),
    GroupSpec("tcp4-any-cbpf", "tcp", "0.0.0.0", 7013, ("127.0.0.1",), cbpf=True),
)


def _program(rng: random.Random, proto: str) -> Insns:
    """A classic BPF program for a group; its result may be past the group's live sockets (the
    kernel then selects by hash) and a load past a short payload makes it return 0."""
    if proto == "tcp":  # a SYN has no payload: steer by CPU or by a constant
        choice = rng.choice(("cpu", "cpu-jeq", "ret"))
    else:
        choice = rng.choice(("cpu", "cpu-jeq", "mod", "and", "jgt", "rsh", "far"))
    if choice == "cpu":
        return [[LD_W_ABS, 0, 0, AD_CPU], [RET_A, 0, 0, 0]]
    if choice == "cpu-jeq":
        return [[LD_W_ABS, 0, 0, AD_CPU], [JMP_JEQ_K, 0, 1, 0], [RET_K, 0, 0, 1], [RET_K, 0, 0, 0]]
    if choice == "ret":
        return [[RET_K, 0, 0, rng.randrange(MAX_MEMBERS)]]
    if choice == "mod":
        return [[LD_W_ABS, 0, 0, 0], [ALU_MOD_K, 0, 0, rng.randint(2, MAX_MEMBERS)], [RET_A, 0, 0, 0]]
    if choice == "and":
        return [[LD_B_ABS, 0, 0, 1], [ALU_AND_K, 0, 0, 7], [RET_A, 0, 0, 0]]
    if choice == "jgt":
        return [[LD_B_ABS, 0, 0, 0], [JMP_JGT_K, 0, 1, 127], [RET_K, 0, 0, 1], [RET_K, 0, 0, 0]]
    if choice == "rsh":
        return [[LD_H_ABS, 0, 0, 2], [ALU_RSH_K, 0, 0, 13], [RET_A, 0, 0, 0]]
    # "far": a byte past short payloads, where the load fails and the program returns 0
    return [[LD_B_ABS, 0, 0, 5], [ALU_AND_K, 0, 0, 1], [RET_A, 0, 0, 0]]


@dataclass
class _Group:
    spec: GroupSpec
    index: int
    members: dict[str, str] = field(default_factory=dict)  # name -> "live" | "shut" (TCP)
    peers: dict[str, int | None] = field(default_factory=dict)  # name -> connected peer port (UDP)

    @property
    def peer_ports(self) -> list[int]:
        return [9100 + PEERS_PER_GROUP * self.index + i for i in range(PEERS_PER_GROUP)]

    def live(self) -> list[str]:
        if self.spec.proto == "tcp":
            return sorted(n for n, s in self.members.items() if s == "live")
        return sorted(n for n, p in self.peers.items() if p is None)

    def size(self) -> int:
        return len(self.members) + len(self.peers)


@dataclass
class _Walk:
    rng: random.Random
    cpus: int
    groups: list[_Group]
    steps: list[Step] = field(default_factory=list)
    migrate: bool = False
    made: int = 0
    sources: int = 0

    def add(self, op: str, **args) -> None:
        self.steps.append(Step(op, args))

    def cpu(self) -> int:
        return self.rng.randrange(self.cpus)

    def name(self, prefix: str) -> str:
        self.made += 1
        return f"{prefix}{self.made}"

    def source_port(self) -> int:
        self.sources += 1
        return SOURCE_PORTS[self.sources % len(SOURCE_PORTS)]

    # -- choosing -----------------------------------------------------------------------------------
    def moves(self) -> list[tuple[int, Callable[[], None]]]:
        moves: list[tuple[int, Callable[[], None]]] = [(2, self.toggle_migrate)]
        for g in self.groups:
            moves += self.tcp_moves(g) if g.spec.proto == "tcp" else self.udp_moves(g)
        return moves

    def tcp_moves(self, g: _Group) -> list:
        live, shut = g.live(), sorted(n for n, s in g.members.items() if s == "shut")
        may_stop = not g.spec.cbpf or len(live) > 1
        moves = []
        if g.size() < MAX_MEMBERS:
            moves.append((5 if live else 8, lambda: self.add_tcp(g)))
        if live or not g.spec.cbpf:
            moves.append((12 if live else 1, lambda: self.clients(g)))
        if live:
            moves += [(3, lambda: self.accept(g)), (1, lambda: self.incoming_cpu(g))]
            if may_stop:
                moves += [(3, lambda: self.close_tcp(g, live)), (3, lambda: self.shutdown(g, live))]
            if g.spec.cbpf:
                moves.append((1, lambda: self.attach(g)))
        if shut:
            moves += [(3, lambda: self.relisten(g, shut)), (1, lambda: self.close_tcp(g, shut))]
        return moves

    def udp_moves(self, g: _Group) -> list:
        live, connected = g.live(), sorted(n for n, p in g.peers.items() if p is not None)
        free_peers = [p for p in g.peer_ports if p not in g.peers.values()]
        moves = []
        if g.size() < MAX_MEMBERS:
            moves.append((5 if g.peers else 8, lambda: self.add_udp(g)))
        if g.peers or not g.spec.cbpf:
            moves.append((12 if g.peers else 1, lambda: self.datagrams(g)))
        if live and (not g.spec.cbpf or len(live) > 1):
            moves.append((2, lambda: self.close_udp(g, live)))
        if connected:
            moves.append((2, lambda: self.close_udp(g, connected)))
        if live:
            moves.append((1, lambda: self.incoming_cpu(g)))
        if live and free_peers and not g.spec.cbpf:
            moves.append((3, lambda: self.connect_udp(g, live, free_peers)))
        if live and g.spec.cbpf:
            moves.append((1, lambda: self.attach(g)))
        return moves

    def step(self) -> None:
        moves = self.moves()
        self.rng.choices([m for _, m in moves], [w for w, _ in moves])[0]()

    # -- operations ---------------------------------------------------------------------------------
    def toggle_migrate(self) -> None:
        self.migrate = not self.migrate
        self.add("sysctl", name="net.ipv4.tcp_migrate_req", value=int(self.migrate))

    def options(self, g: _Group) -> dict:
        options: dict = {}
        if self.rng.random() < 0.15:
            options["SO_INCOMING_CPU"] = self.cpu()
        if g.spec.cbpf and g.size() == 0:
            # attached before bind: the kernel makes the group then, and bind/listen keep it
            options["SO_ATTACH_REUSEPORT_CBPF"] = _program(self.rng, g.spec.proto)
        return options

    def attach(self, g: _Group) -> None:
        sock = self.rng.choice(g.live())
        self.add("setsockopt", sock=sock, name="SO_ATTACH_REUSEPORT_CBPF", prog=_program(self.rng, g.spec.proto))

    def open(self, g: _Group, prefix: str) -> str:
        name = self.name(prefix)
        self.add("open", sock=name, proto=g.spec.proto, family=g.spec.family, addr=g.spec.addr, port=g.spec.port,
                 options=self.options(g))
        return name

    def add_tcp(self, g: _Group) -> None:
        g.members[self.open(g, "t")] = "live"

    def clients(self, g: _Group) -> None:
        count = self.rng.randint(1, MAX_BURST)
        cpus = [self.cpu() for _ in range(count)]
        self.add("clients", addr=self.rng.choice(g.spec.dests), port=g.spec.port, count=count, cpu=cpus)

    def accept(self, g: _Group) -> None:
        self.add("accept", sock=self.rng.choice(g.live()), count=self.rng.choice(["all", "all", 1, 2]))

    def close_tcp(self, g: _Group, names: list[str]) -> None:
        name = self.rng.choice(names)
        self.add("close", sock=name, cpu=self.cpu())
        del g.members[name]

    def shutdown(self, g: _Group, live: list[str]) -> None:
        name = self.rng.choice(live)
        how = self.rng.choice(("rdwr", "rdwr", "rd", "wr"))
        self.add("shutdown", sock=name, how=how, cpu=self.cpu())
        if how != "wr":  # SHUT_WR leaves a listener listening
            g.members[name] = "shut"

    def relisten(self, g: _Group, shut: list[str]) -> None:
        name = self.rng.choice(shut)
        self.add("listen", sock=name)
        g.members[name] = "live"

    def incoming_cpu(self, g: _Group) -> None:
        value = -1 if self.rng.random() < 0.2 else self.cpu()
        self.add("setsockopt", sock=self.rng.choice(g.live()), name="SO_INCOMING_CPU", value=value)

    def add_udp(self, g: _Group) -> None:
        g.peers[self.open(g, "u")] = None

    def close_udp(self, g: _Group, names: list[str]) -> None:
        name = self.rng.choice(names)
        self.add("close", sock=name, cpu=self.cpu())
        del g.peers[name]

    def connect_udp(self, g: _Group, live: list[str], free_peers: list[int]) -> None:
        name, peer = self.rng.choice(live), self.rng.choice(free_peers)
        self.add("connect", sock=name, addr=self.peer_addr(g), port=peer)
        g.peers[name] = peer

    def peer_addr(self, g: _Group) -> str:
        if g.spec.family == 4:
            return "127.0.0.1"
        return "::ffff:127.0.0.1" if "127.0.0.1" in g.spec.dests and self.rng.random() < 0.5 else "::1"

    def datagrams(self, g: _Group) -> None:
        count = self.rng.randint(1, MAX_BURST)
        dest = self.rng.choice(g.spec.dests)
        peers = [p for p in g.peer_ports if self.rng.random() < 0.5]
        self.rng.shuffle(peers)
        src_ports = [peers.pop() if peers and self.rng.random() < 0.3 else self.source_port() for _ in range(count)]
        payloads = [self.payload(g) for _ in range(count)]
        cpus = [self.cpu() for _ in payloads]
        self.add("datagrams", addr=dest, port=g.spec.port, count=count, cpu=cpus, src_ports=src_ports,
                 payload=[p.hex() for p in payloads])

    def payload(self, g: _Group) -> bytes:
        return bytes(self.rng.randrange(256) for _ in range(self.rng.choice((1, 2, 4, 4, 8))))


def random_scenario(seed: int, steps: int, *, cpus: int | None = None) -> Scenario:
    """The random walk for `seed`: `steps` operations (each may send several connections)."""
    rng = random.Random(seed)
    chosen = [GROUPS[0], GROUPS[1]] + rng.sample(GROUPS[2:], rng.randint(2, 5))
    groups = [_Group(spec, GROUPS.index(spec)) for spec in chosen]
    walk = _Walk(rng, cpus or len(os.sched_getaffinity(0)), groups)
    for _ in range(steps):
        walk.step()
    return Scenario(
        name=f"random-{seed}-{steps}",
        description=f"random walk, seed {seed}, {steps} steps, groups {', '.join(g.key for g in chosen)}",
        steps=tuple(walk.steps),
        source=f"random walk {seed} ({steps} steps)",
    )
