"""One simulated host at the socket layer: what the recorder and application logs see.

Sockets are opened, bound, listened on and closed through the socket-layer model
(`tracekit.kernel.socket_layer.Host`), and the rows written are the trace format's socket-layer
events. Traffic is `syn`s answered by `accept`s and `datagram`s answered by `recv`s: every
arrival's socket is decided by the model (in bulk by `fast.select_run` on the group the lookup
reaches, `Host.hash_route`; with `bulk=False` by `Host.syn` / `Host.datagram` one at a time),
and each socket drains its own queue, so observations come in socket order, not arrival order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from tracekit.simulator.workloads.host import CPUS, HostFull
from tracekit.simulator.workloads.rows import RowBuffer
from tracekit.kernel.net import Net
from tracekit.kernel.profiles import Profile
from tracekit.kernel.socket_layer import Host
from tracekit.replay.fast import select_run

__all__ = ["SocketPort", "SocketSimHost"]

CLIENTS = tuple(f"10.{i // 250}.{i % 250}.{1 + i % 7}" for i in range(1000))
CLIENTS6 = tuple(f"fd00::{i // 250:x}:{i % 250:x}:{1 + i % 7:x}" for i in range(1000))
"""Remote addresses traffic comes from (IPv4, IPv6)."""


@dataclass
class SocketPort:
    """One bound address and port and the sockets on it (one reuseport group)."""

    proto: str
    laddr: str
    lport: int
    members: list[int] = field(default_factory=list)


class SocketSimHost:
    """The socket-layer model of one host and the rows written for it."""

    def __init__(self, name: str, *, profile: Profile, events: int, seed: int, index: int,
                 fault_rate: float = 0.0, bulk: bool = True) -> None:
        self.name = name
        self.bulk = bulk
        self.model = Host(Net(profile=profile))
        self.rng = np.random.default_rng([seed, index, 2])
        self._fault_rng = np.random.default_rng([seed, index, 3])
        self._fault_rate = fault_rate
        self.rows = RowBuffer(name)
        self.remaining = events
        self.faults: list[np.ndarray] = []
        self.next_sk = 1
        self.next_client = 0  # source ports: every flow is a new 4-tuple

    # -- rows -------------------------------------------------------------------------------

    def _emit(self, event: str, **values: object) -> None:
        if self.remaining <= 0:
            raise HostFull
        self.remaining -= 1
        self.model.seq = self.rows.row(event, **values)

    # -- group changes ----------------------------------------------------------------------

    def open(self, port: SocketPort, *, incoming_cpu: int | None = None) -> int:
        """A new socket joins `port` (TCP: bind and listen; UDP: bind)."""
        if self.remaining < 4 + (incoming_cpu is not None):
            raise HostFull
        sk, self.next_sk = self.next_sk, self.next_sk + 1
        family = _family(port)
        model = self.model
        self._emit("socket", sk=sk, proto=port.proto, family=family)
        model.socket(sk, port.proto, family)
        self._emit("setsockopt", sk=sk, name="SO_REUSEPORT", value=1, ret=0)
        model.setsockopt(sk, "SO_REUSEPORT", 1, None, 0)
        if incoming_cpu is not None:
            self._emit("setsockopt", sk=sk, name="SO_INCOMING_CPU", value=incoming_cpu, ret=0)
            model.setsockopt(sk, "SO_INCOMING_CPU", incoming_cpu, None, 0)
        self._emit("bind", sk=sk, laddr=port.laddr, lport=port.lport, ret=0)
        model.bind(sk, port.laddr, port.lport, 0)
        if port.proto == "tcp":
            self._emit("listen", sk=sk, ret=0)
            model.listen(sk, 0)
        port.members.append(sk)
        return sk

    def close(self, port: SocketPort, sk: int) -> None:
        cpu = int(self.rng.integers(CPUS))
        self._emit("close", sk=sk, cpu=cpu, ret=0)
        self.model.close(sk, cpu)
        port.members.remove(sk)

    # -- traffic ----------------------------------------------------------------------------

    def traffic(self, ports: list[SocketPort], n: int, weights: list[float] | None = None) -> None:
        """`n` connections or datagrams (each with its `accept` or `recv`: 2n rows) spread over
        `ports`; every `DRAIN` arrivals each socket takes what reached it, socket by socket."""
        n = min(n, self.remaining // 2)
        chosen = [i for i, port in enumerate(ports) if port.members]
        if not chosen or n <= 0:
            if self.remaining < 2:
                raise HostFull
            return
        p = None
        if weights is not None:
            w = np.array([weights[i] for i in chosen], dtype=float)
            p = w / w.sum()
        rng = self.rng
        which = np.array(chosen)[rng.choice(len(chosen), size=n, p=p)]
        hashes = rng.integers(0, 2**32, size=n, dtype=np.uint64).astype(np.uint32)
        cpus = rng.integers(0, CPUS, size=n).astype(np.int32)
        first = self.next_client
        self.next_client += n
        serial = np.arange(first, first + n)
        client = serial % len(CLIENTS)
        rport = (1024 + (serial // len(CLIENTS)) % 64000).astype(np.int32)
        faithful = not self.bulk or n <= FEW
        expected = self._decide(ports, which, hashes, cpus, client, rport, faithful)
        observed = self._inject_faults(ports, which, expected)
        src, is_obs = _layout(observed)
        write = self._rows if n <= FEW else self._columns
        seqs = write(ports, which, src, is_obs, observed, hashes, cpus, client, rport)
        if faithful:
            self._observe(ports, which, src, is_obs, observed, client, rport)
        self.remaining -= 2 * n
        moved = np.flatnonzero(is_obs & (observed[src] != expected[src]))
        if len(moved):
            self.faults.append(np.stack([seqs[moved], expected[src][moved],
                                         observed[src][moved]], axis=1))

    def _columns(self, ports: list[SocketPort], which: np.ndarray, src: np.ndarray,
                 is_obs: np.ndarray, observed: np.ndarray, hashes: np.ndarray, cpus: np.ndarray,
                 client: np.ndarray, rport: np.ndarray) -> np.ndarray:
        tcp = np.array([port.proto == "tcp" for port in ports])[which][src]
        family = np.array([_family(port) for port in ports], np.int8)[which][src]
        lport = np.array([port.lport for port in ports], dtype=np.int32)[which]
        code = self.rows.code
        events = np.where(is_obs, np.where(tcp, code("event", "accept"), code("event", "recv")),
                          np.where(tcp, code("event", "syn"), code("event", "datagram")))
        proto = np.where(tcp, code("proto", "tcp"), code("proto", "udp"))
        return self.rows.mixed(events.astype(np.int32), **{
            "sk": pa.array(observed[src], pa.int64(), mask=~is_obs),
            "proto": pa.array(proto.astype(np.int32)),
            "family": family,
            "laddr": _strings([port.laddr for port in ports], which[src]),
            "lport": lport[src],
            "raddr": _strings(list(CLIENTS + CLIENTS6), client[src] + (family == 6) * len(CLIENTS)),
            "rport": rport[src],
            "hash": pa.array(hashes[src], pa.uint32(), mask=is_obs),
            "cpu": pa.array(cpus[src], pa.int32(), mask=is_obs),
        })

    def _rows(self, ports: list[SocketPort], which: np.ndarray, src: np.ndarray,
              is_obs: np.ndarray, observed: np.ndarray, hashes: np.ndarray, cpus: np.ndarray,
              client: np.ndarray, rport: np.ndarray) -> np.ndarray:
        """As `_columns`, row by row: a few rows as columns would cost more than they hold."""
        seqs = []
        for i, obs in zip(src.tolist(), is_obs.tolist()):
            port = ports[int(which[i])]
            flow = {"proto": port.proto, "family": _family(port), "laddr": port.laddr,
                    "lport": port.lport, "raddr": _client(port, int(client[i])),
                    "rport": int(rport[i])}
            if obs:
                event = "accept" if port.proto == "tcp" else "recv"
                seqs.append(self.rows.row(event, sk=int(observed[i]), **flow))
            else:
                event = "syn" if port.proto == "tcp" else "datagram"
                seqs.append(self.rows.row(event, hash=int(hashes[i]), cpu=int(cpus[i]), **flow))
        return np.array(seqs, dtype=np.int64)

    def _observe(self, ports: list[SocketPort], which: np.ndarray, src: np.ndarray,
                 is_obs: np.ndarray, observed: np.ndarray, client: np.ndarray,
                 rport: np.ndarray) -> None:
        """The model takes the observations of the arrivals it was given one by one."""
        for i in src[is_obs].tolist():
            port = ports[int(which[i])]
            take = self.model.accept if port.proto == "tcp" else self.model.recv
            take(int(observed[i]), port.laddr, port.lport, _client(port, int(client[i])),
                 int(rport[i]))

    def _decide(self, ports: list[SocketPort], which: np.ndarray, hashes: np.ndarray,
                cpus: np.ndarray, client: np.ndarray, rport: np.ndarray,
                faithful: bool) -> np.ndarray:
        """The socket the model puts each arrival on: `faithful`, one `syn` / `datagram` call
        each (queued in the model until `_observe`); else `select_run` on the group the lookup
        reaches, which leaves the model as it was but for the CPU."""
        expected = np.empty(len(which), dtype=np.int64)
        model = self.model
        if faithful:
            for i in range(len(which)):
                port = ports[int(which[i])]
                model.seq = self.rows.next_seq + i  # as the seq the row will get, near enough
                arrive = model.syn if port.proto == "tcp" else model.datagram
                pick = arrive(port.laddr, port.lport, _client(port, int(client[i])),
                              int(rport[i]), int(hashes[i]), int(cpus[i]), None)
                expected[i] = pick.sk
            return expected
        for g in np.unique(which).tolist():
            port = ports[g]
            rows = np.flatnonzero(which == g)
            head = model.hash_route("syn" if port.proto == "tcp" else "datagram", port.laddr,
                                    port.lport)
            if head is None:
                raise AssertionError(f"no hash decides {port.proto} {port.laddr}:{port.lport}")
            expected[rows] = select_run(head.sk.sk_reuseport_cb, hashes[rows], cpus[rows])
        model.net.cpu = int(cpus[-1])
        return expected

    def _inject_faults(self, ports: list[SocketPort], which: np.ndarray,
                       expected: np.ndarray) -> np.ndarray:
        """Move a `fault_rate` share of the observations to another member of the port."""
        if not self._fault_rate:
            return expected
        observed = expected.copy()
        hit = np.flatnonzero(self._fault_rng.random(len(expected)) < self._fault_rate)
        for i in hit.tolist():
            others = [sk for sk in ports[int(which[i])].members if sk != expected[i]]
            if others:
                observed[i] = others[int(self._fault_rng.integers(len(others)))]
        return observed


FEW = 32
"""Arrivals written row by row rather than as one block of columns."""
DRAIN = 256
"""Arrivals between two passes of the applications over their sockets."""


def _layout(observed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of `n` arrivals and their observations: every `DRAIN` arrivals, then each socket
    takes what reached it (sockets in id order, each queue in arrival order). Returns the
    arrival each row is about and whether the row is the observation."""
    n = len(observed)
    arrival = np.arange(n)
    chunk = arrival // DRAIN
    start = chunk * DRAIN
    size = np.minimum(DRAIN, n - start)
    drained = np.lexsort((arrival, observed, chunk))
    src = np.empty(2 * n, dtype=np.int64)
    is_obs = np.zeros(2 * n, dtype=bool)
    src[start + arrival] = arrival
    at = 2 * start[drained] + size[drained] + (arrival - start[drained])
    src[at] = drained
    is_obs[at] = True
    return src, is_obs


def _family(port: SocketPort) -> int:
    return 6 if ":" in port.laddr else 4


def _client(port: SocketPort, i: int) -> str:
    return (CLIENTS6 if ":" in port.laddr else CLIENTS)[i]


def _strings(values: list[str], index: np.ndarray) -> pa.Array:
    return pa.DictionaryArray.from_arrays(pa.array(index.astype(np.int32)),
                                          pa.array(values, pa.string())).cast(pa.string())
