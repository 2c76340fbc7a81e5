"""Hashes the observer could not see, asked of the kernel again after the scenario.

A group running the scenario's classic BPF program, or one whose program the scenario detached,
cannot carry the SK_REUSEPORT observer, so the kernel's flow hash for its traffic goes unseen. The
hash is a pure function of the namespace and the 4-tuple (inet_ehashfn / udp_ehashfn: a boot-time
secret and the namespace's hash_mix), so once the scenario is over and its sockets are closed, the
recorder sends each such flow again, from the same source address and port, to a fresh observed
group bound to `Probe.bound`, in the same namespace, and reads the hash the kernel passes to
reuseport selection. The bound address goes into the hash: a wildcard group is looked up with
INADDR_ANY or in6addr_any as the destination. So a flow probed at a group bound as the original
was gets the original's selection hash, and one probed at a group bound to the flow's own
destination gets the established connection's `sk_hash` (the hash over the real 4-tuple, which
migration selects by). Flows whose hash the observer did see are sent again too, as witnesses: a
witness whose hash differs means the premise broke, and the recording fails.

Nothing here runs while the scenario does, so it cannot change an outcome.
"""

from __future__ import annotations

import socket
import struct
import time
from collections import defaultdict
from dataclasses import dataclass

from tracekit.recorder.flows import Flow, family_of
from tracekit.recorder.observer import Observer
from tracekit.errors import TracekitError

REPROBE_NAME = "reprobe-hash/1"
SETTLE_S = 0.5
LINGER_RESET = struct.pack("ii", 1, 0)  # close with RST: no TIME_WAIT left behind
IPPROTO = {"tcp": socket.IPPROTO_TCP, "udp": socket.IPPROTO_UDP}


class ReprobeError(TracekitError):
    """The kernel gave a flow another hash than it did during the scenario."""


@dataclass(frozen=True)
class Probe:
    """A flow to send again: its protocol, 4-tuple, and the address the probing group binds to
    (the flow's destination or the wildcard of its family); `known` is the observed hash of a
    witness."""

    proto: str
    flow: Flow
    bound: str
    known: int | None = None


Key = tuple[str, str, Flow]
"""(proto, bound, flow): one probe's answer."""


def reprobe(observer: Observer, probes: list[Probe]) -> dict[Key, int | None]:
    """The kernel's hash of each probe's flow sent to a group bound to its `bound`, keyed by
    (proto, bound, flow); None where the kernel gave it no hash or more than one (never a
    guess). Raises ReprobeError if a witness comes back with another hash."""
    observer.drain()  # whatever the scenario left behind is not ours
    by_group: dict[tuple[str, str, int], list[Probe]] = defaultdict(list)
    for probe in probes:
        by_group[(probe.proto, probe.bound, probe.flow.lport)].append(probe)
    hashes: dict[Key, int | None] = {}
    for (proto, bound, lport), group_probes in sorted(by_group.items()):
        flows = sorted({p.flow for p in group_probes}, key=lambda f: (f.laddr, f.raddr, f.rport))
        hashes.update({(proto, bound, flow): h for flow, h in _probe_group(observer, proto, bound, lport, flows).items()})
    for probe in probes:
        found = hashes.get((probe.proto, probe.bound, probe.flow))
        if probe.known is not None and found is not None and found != probe.known:
            raise ReprobeError(
                f"the kernel hashed {probe.proto} {probe.flow} as {found:#010x} after the scenario but "
                f"{probe.known:#010x} during it: flow hashes are not stable here, so re-probed hashes cannot be trusted"
            )
    return hashes


def _probe_group(observer: Observer, proto: str, bound: str, lport: int, flows: list[Flow]) -> dict[Flow, int | None]:
    family = socket.AF_INET if family_of(bound) == 4 else socket.AF_INET6
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    with socket.socket(family, kind) as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past connections may linger in TIME_WAIT
        if family == socket.AF_INET6:
            server.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)  # v4 flows probe a v4 group
        try:
            server.bind((bound, lport))
        except OSError:
            return dict.fromkeys(flows)  # the port is still taken: these flows stay without hash
        if proto == "tcp":
            server.listen(len(flows) + 1)
        observer.attach(server)
        for flow in flows:
            _send(family, kind, flow)
        return _collect(observer, IPPROTO[proto], flows)


def _send(family: int, kind: int, flow: Flow) -> None:
    """Send the flow once; if its source port is taken, send nothing (the flow stays without hash)."""
    with socket.socket(family, kind) as client:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            client.bind((flow.raddr, flow.rport))
        except OSError:
            return
        if kind == socket.SOCK_DGRAM:
            client.sendto(b"r", (flow.laddr, flow.lport))
            return
        client.setblocking(False)
        client.connect_ex((flow.laddr, flow.lport))  # on loopback the SYN is handled within this call
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)


def _collect(observer: Observer, ip_protocol: int, flows: list[Flow]) -> dict[Flow, int | None]:
    seen: dict[Flow, set[int]] = defaultdict(set)
    deadline = time.monotonic() + SETTLE_S
    while True:
        for record in observer.drain():
            if record.ip_protocol == ip_protocol and record.saddr is not None:
                seen[Flow(record.daddr, record.dport, record.saddr, record.sport)].add(record.hash)
        if all(flow in seen for flow in flows) or time.monotonic() > deadline:
            break
        time.sleep(0.001)
    return {flow: next(iter(seen[flow])) if len(seen[flow]) == 1 else None for flow in flows}
