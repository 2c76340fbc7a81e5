"""One simulated host: the kernel model decides, a kernel probe's rows come out.

Every operation calls the model's `sock_reuseport` functions exactly as the kernel's callers do
(and as replay will), then writes the kernel-layer rows a function-level probe on a production
host would record, with the return values and selections the model produced. Runs of selections
are computed in bulk by `tracekit.replay.fast`, falling back to the faithful function only where a
program decides.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tracekit.simulator.workloads.rows import RowBuffer
from tracekit.kernel import sock_reuseport as sr
from tracekit.kernel.bpf import BpfProg, Skb
from tracekit.kernel.cbpf import Insn, encode_sock_filter
from tracekit.kernel.net import Net
from tracekit.kernel.profiles import Profile
from tracekit.kernel.sock import (IPPROTO_TCP, PROTOCOLS, TCP_CLOSE, TCP_ESTABLISHED, TCP_LISTEN,
                                  Sock)
from tracekit.kernel.sock_reuseport import SockReuseport
from tracekit.replay.fast import FAITHFUL, NO_SOCKET, select_many

__all__ = ["CPUS", "HostFull", "Port", "SimHost"]

CPUS = 8
"""CPUs of a simulated host: selections and closes run on one of them."""

PAYLOAD_LEN = 16
MIGRATE_REQ = "net.ipv4.tcp_migrate_req"


class HostFull(Exception):
    """The host has written its share of the trace's events."""


@dataclass
class Port:
    """The sockets of one address and port: one reuseport group while any of them listens."""

    proto: str
    members: list[Sock] = field(default_factory=list)

    @property
    def reuse(self) -> SockReuseport | None:
        return self.members[0].sk_reuseport_cb if self.members else None


class SimHost:
    """The model state of one host and the rows written for it."""

    def __init__(self, name: str, *, profile: Profile, events: int, seed: int, index: int,
                 fault_rate: float = 0.0, bulk: bool = True) -> None:
        self.name = name
        self.bulk = bulk
        self.net = Net(profile=profile)
        self.rng = np.random.default_rng([seed, index, 0])
        self._fault_rng = np.random.default_rng([seed, index, 1])
        self._fault_rate = fault_rate
        self.rows = RowBuffer(name)
        self.remaining = events
        self.faults: list[np.ndarray] = []
        self._socks: dict[int, Sock] = {}

    # -- rows -------------------------------------------------------------------------------

    def _emit(self, event: str, **values: object) -> int:
        self._need_room()
        self.remaining -= 1
        return self.rows.row(event, **values)

    def _need_room(self) -> None:
        if self.remaining <= 0:
            raise HostFull

    # -- group changes ----------------------------------------------------------------------

    def sysctl(self, name: str, value: int) -> None:
        self._need_room()
        if name == MIGRATE_REQ:
            self.net.sysctl_tcp_migrate_req = value
        self._emit("sysctl", name=name, value=value)

    def open(self, port: Port, *, incoming_cpu: int | None = None,
             bind_inany: bool = False) -> Sock:
        """A new socket joins `port`'s group (TCP: listen(); UDP: bind())."""
        self._need_room()
        sk = Sock(sk_id=len(self._socks) + 1, sk_net=self.net, sk_protocol=PROTOCOLS[port.proto])
        self._socks[sk.sk_id] = sk
        sk.sk_reuseport = True
        self._emit("setsockopt", sk=sk.sk_id, name="SO_REUSEPORT", value=1, ret=0)
        if incoming_cpu is not None:
            self.set_incoming_cpu(sk, incoming_cpu)
        if sk.sk_protocol == IPPROTO_TCP:
            self.set_state(sk, TCP_LISTEN)
        self._need_room()
        if port.members:
            ret = sr.reuseport_add_sock(sk, port.members[0], bind_inany)
            self._emit("reuseport_add_sock", sk=sk.sk_id, sk2=port.members[0].sk_id,
                       value=int(bind_inany), ret=ret)
        else:
            ret = sr.reuseport_alloc(sk, bind_inany)
            self._emit("reuseport_alloc", sk=sk.sk_id, value=int(bind_inany), ret=ret)
        sk.hashed = True
        port.members.append(sk)
        return sk

    def close(self, port: Port, sk: Sock, *, queued: int = 0) -> None:
        """`sk` leaves the group: a TCP listener's `queued` connections try to migrate."""
        port.members.remove(sk)
        if sk.sk_protocol != IPPROTO_TCP:
            self._need_room()
            sr.reuseport_detach_sock(sk)
            self._emit("reuseport_detach_sock", sk=sk.sk_id)
            sk.hashed = False
            return
        self.set_state(sk, TCP_CLOSE)
        self._need_room()
        sr.reuseport_stop_listen_sock(sk)
        self._emit("reuseport_stop_listen_sock", sk=sk.sk_id, proto=port.proto)
        sk.hashed = False
        cpu = int(self.rng.integers(CPUS))
        for sk_hash in self.rng.integers(0, 2**32, size=queued).tolist():
            self._migrate(sk, sk_hash, cpu)
        if sk.sk_reuseport_cb is not None:
            self._need_room()
            sr.reuseport_detach_sock(sk)
            self._emit("reuseport_detach_sock", sk=sk.sk_id)

    def _migrate(self, sk: Sock, sk_hash: int, cpu: int) -> None:
        self._need_room()
        child = Sock(sk_id=len(self._socks) + 1, sk_net=self.net, sk_state=TCP_ESTABLISHED,
                     sk_hash=sk_hash)
        self._socks[child.sk_id] = child
        self.net.cpu = cpu
        nsk = sr.reuseport_migrate_sock(sk, child, None)
        self._emit("reuseport_migrate_sock", sk=sk.sk_id, sk2=child.sk_id, hash=sk_hash, cpu=cpu,
                   observed=NO_SOCKET if nsk is None else nsk.sk_id)  # type: ignore[union-attr]

    def set_state(self, sk: Sock, state: int) -> None:
        self._need_room()
        sk.sk_state = state
        self._emit("sk_state", sk=sk.sk_id, value=state)

    def connect(self, sk: Sock) -> None:
        """A UDP member connects: hash selection skips it from now on."""
        self.set_state(sk, TCP_ESTABLISHED)
        self._need_room()
        sr.reuseport_has_conns_set(sk)
        self._emit("reuseport_has_conns_set", sk=sk.sk_id)

    def set_incoming_cpu(self, sk: Sock, cpu: int) -> None:
        self._need_room()
        sr.reuseport_update_incoming_cpu(sk, cpu)
        self._emit("reuseport_update_incoming_cpu", sk=sk.sk_id, value=cpu)

    def attach_prog(self, sk: Sock, insns: tuple[Insn, ...]) -> None:
        self._need_room()
        ret = sr.reuseport_attach_prog(sk, BpfProg.cbpf(insns))
        self._emit("reuseport_attach_prog", sk=sk.sk_id, prog=encode_sock_filter(insns), ret=ret)

    def detach_prog(self, sk: Sock) -> None:
        self._need_room()
        ret = sr.reuseport_detach_prog(sk)
        self._emit("reuseport_detach_prog", sk=sk.sk_id, ret=ret)

    # -- selections -------------------------------------------------------------------------

    def select(self, ports: list[Port], n: int, weights: list[float] | None = None) -> None:
        """`n` connections or datagrams arrive, spread over `ports` by `weights`."""
        self._need_room()
        n = min(n, self.remaining)
        chosen = [i for i, port in enumerate(ports) if port.members]
        if not chosen or n <= 0:
            return
        p = None
        if weights is not None:
            w = np.array([weights[i] for i in chosen], dtype=float)
            p = w / w.sum()
        groups: list[SockReuseport] = [ports[i].reuse for i in chosen]  # type: ignore[misc]
        live = [np.array([s.sk_id for s in g.live()], dtype=np.int64) for g in groups]
        group = self.rng.choice(len(groups), size=n, p=p)
        # The socket the lookup found first, which the kernel passes to reuseport_select_sock:
        # the newest listener heads its hash bucket.
        heads = np.array([ports[i].members[-1].sk_id for i in chosen], dtype=np.int64)
        sk = heads[group]
        hashes = self.rng.integers(0, 2**32, size=n, dtype=np.uint64).astype(np.uint32)
        cpus = self.rng.integers(0, CPUS, size=n).astype(np.int32)
        programs = any(g.prog is not None for g in groups)  # type: ignore[union-attr]
        payload = (self.rng.integers(0, 256, size=(n, PAYLOAD_LEN), dtype=np.uint8)
                   if programs else None)
        expected = (select_many(groups, group, hashes, cpus) if self.bulk
                    else np.full(n, FAITHFUL, dtype=np.int64))
        for i in np.flatnonzero(expected == FAITHFUL).tolist():
            expected[i] = self._select_one(int(sk[i]), int(hashes[i]), int(cpus[i]),
                                           None if payload is None else payload[i].tobytes())
        observed = self._inject_faults(expected, group, live)
        columns = {"sk": sk, "hash": hashes, "cpu": cpus, "observed": observed}
        if payload is not None:
            columns["payload"] = _binary_column(payload)
        seqs = self.rows.bulk("reuseport_select_sock", n, **columns)
        self.remaining -= n
        moved = np.flatnonzero(observed != expected)
        if len(moved):
            self.faults.append(np.stack([seqs[moved], expected[moved], observed[moved]], axis=1))

    def _select_one(self, sk_id: int, hash: int, cpu: int, payload: bytes | None) -> int:
        sk = self._socks[sk_id]
        self.net.cpu = cpu
        skb = None if payload is None else Skb(payload=payload, len=len(payload), cpu=cpu)
        chosen = sr.reuseport_select_sock(sk, hash, skb, 0)
        if not isinstance(chosen, Sock):
            if chosen is not None:
                raise AssertionError(f"the simulator's program gave {chosen!r}")
            return NO_SOCKET
        return chosen.sk_id

    def _inject_faults(self, expected: np.ndarray, group: np.ndarray,
                       live: list[np.ndarray]) -> np.ndarray:
        """Move a `fault_rate` share of the observations to another live member."""
        if not self._fault_rate:
            return expected
        observed = expected.copy()
        hit = self._fault_rng.random(len(expected)) < self._fault_rate
        for g, ids in enumerate(live):
            rows = np.flatnonzero(hit & (group == g))
            if len(ids) < 2 or not len(rows):
                continue
            slot = np.zeros(len(rows), dtype=np.int64)
            known = expected[rows][:, None] == ids[None, :]
            slot[known.any(axis=1)] = known.argmax(axis=1)[known.any(axis=1)]
            step = self._fault_rng.integers(1, len(ids), size=len(rows))
            observed[rows] = ids[(slot + step) % len(ids)]
        return observed


def _binary_column(payload: np.ndarray):
    import pyarrow as pa

    n, width = payload.shape
    fixed = pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), n,
                                                 [None, pa.py_buffer(payload.tobytes())])
    return fixed.cast(pa.binary())
