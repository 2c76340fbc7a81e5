"""Workloads of the simulator: what operators run, as the kernel would see it.

A workload is a generator over one `SimHost`: it opens and closes sockets, changes groups and
sends traffic through the host's methods, and yields between steps so the caller can stream the
rows out. It never ends on its own; the host stops it when its share of events is written.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from tracekit.simulator.workloads.cbpf import cbpf
from tracekit.simulator.workloads.host import SimHost
from tracekit.simulator.workloads.mutation_heavy import mutation_heavy
from tracekit.simulator.workloads.rolling_restart import rolling_restart
from tracekit.simulator.workloads.scale import scale
from tracekit.simulator.workloads.steady import steady
from tracekit.simulator.workloads.udp_connected import udp_connected

__all__ = ["DEFAULT_WORKLOAD", "WORKLOADS", "Workload"]

Workload = Callable[[SimHost], Iterator[None]]

WORKLOADS: dict[str, Workload] = {
    "steady": steady,
    "rolling-restart": rolling_restart,
    "scale": scale,
    "udp-connected": udp_connected,
    "cbpf": cbpf,
    "mutation-heavy": mutation_heavy,
}

DEFAULT_WORKLOAD = "steady"
