"""Simulator: synthetic traces of operator workloads, decided by the kernel model (no sockets)."""

from tracekit.simulator.api import FAULTS_IN_METADATA, LAYERS, injected_faults, simulate
from tracekit.simulator.workloads import DEFAULT_WORKLOAD, WORKLOADS

__all__ = ["simulate", "injected_faults", "WORKLOADS", "DEFAULT_WORKLOAD", "LAYERS", "FAULTS_IN_METADATA"]
