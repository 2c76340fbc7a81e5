"""Synthetic traces: workloads operators run, decided by the kernel model, written as a probe would.

`simulate()` drives a workload (`tracekit.simulator.workloads`) on each host and streams the
kernel-layer rows into a trace, one record batch at a time, so memory stays flat whatever the
number of events. The model decides every return value and selection, so a simulated trace
replays with 0 mismatches; `inject_faults` moves a share of the selections to a wrong socket and
records which (`injected_faults`).

Same arguments, same bytes: every random choice comes from seeds derived from `seed`, and
timestamps are synthetic (`ts_ns = seq * 1000`).

Injected faults are listed in the trace's metadata (`tracekit.simulate.faults`, JSON
``{host: [[seq, expected, observed], ...]}``) when `inject_faults * events` is at most
`FAULTS_IN_METADATA`; otherwise in a sidecar Parquet file `<output>.faults.parquet` (columns
host, seq, expected, observed) named by `tracekit.simulate.faults_file`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tracekit.simulator.workloads import DEFAULT_WORKLOAD, WORKLOADS
from tracekit.simulator.workloads.host import HostFull, SimHost
from tracekit.simulator.workloads.socket_host import SocketSimHost
from tracekit.simulator.workloads.socket_workloads import SOCKET_WORKLOADS
from tracekit.errors import TracekitError
from tracekit.kernel.profiles import is_release, profile_for_kernel
from tracekit.trace import read_metadata, write_trace

__all__ = ["FAULTS_IN_METADATA", "LAYERS", "SOCKET_WORKLOADS", "WORKLOADS", "injected_faults",
           "simulate"]

LAYERS = ("kernel", "socket")
"""kernel: the rows a function probe writes (`reuseport_*` calls); socket: the rows the recorder
writes (sockets, binds, closes, `syn`/`accept`, `datagram`/`recv`)."""

CHUNK_ROWS = 1 << 18
GENERATOR_VERSION = "1"
"""Bumped whenever the same arguments start to give different rows (`tracekit.simulate.version`)."""
FAULTS_IN_METADATA = 1_000
FAULTS_KEY = "tracekit.simulate.faults"
FAULTS_FILE_KEY = "tracekit.simulate.faults_file"
FAULT_COLUMNS = pa.schema([("host", pa.string()), ("seq", pa.int64()), ("expected", pa.int64()),
                           ("observed", pa.int64())])


def simulate(workload: str = DEFAULT_WORKLOAD, *, events: int, seed: int,
             output: str | os.PathLike[str], inject_faults: float = 0.0, hosts: int = 1,
             kernel: str | None = None, bulk: bool = True, layer: str = "kernel",
             progress: Callable[[int, int], None] | None = None) -> Path:
    """Write a simulated trace of `events` events (split over `hosts` hosts) to `output`.

    `progress(rows_done, rows_total)` is called after each chunk (the total counts both passes
    when the injected faults are listed in the metadata, which needs a first pass).

    `kernel` is a `uname -r` release whose behaviour profile decides (stored as
    `tracekit.kernel`); None simulates the newest profile and leaves the key out. `bulk=False`
    decides every selection with one `reuseport_select_sock` call instead of
    `tracekit.replay.fast` (slow; the output is the same, which checks the bulk path).
    """
    _check_arguments(workload, events, seed, inject_faults, hosts, kernel)
    output = Path(output)
    metadata = {
        "tracekit.workload": workload,
        "tracekit.seed": str(seed),
        "tracekit.simulate.events": str(events),
        "tracekit.simulate.hosts": str(hosts),
        "tracekit.simulate.fault_rate": repr(float(inject_faults)),
        "tracekit.simulate.version": GENERATOR_VERSION,
    }
    if kernel:
        metadata["tracekit.kernel"] = kernel
    if layer != "kernel":
        metadata["tracekit.simulate.layer"] = layer
    sidecar = Path(f"{output}.faults.parquet")
    in_metadata = inject_faults * events <= FAULTS_IN_METADATA
    plan = _Plan(workload, events, seed, inject_faults, hosts, kernel, bulk, layer)
    passes = 2 if inject_faults and in_metadata else 1
    counted = _Counted(progress, events * passes)
    if inject_faults and in_metadata:
        faults: dict[str, list[np.ndarray]] = {}
        for _ in counted(plan.batches(faults)):  # a first pass to learn which rows the faults hit
            pass
        listed = {host: np.concatenate(found).tolist() if found else []
                  for host, found in faults.items()}
        metadata[FAULTS_KEY] = json.dumps(listed, separators=(",", ":"))
    elif inject_faults:
        metadata[FAULTS_FILE_KEY] = sidecar.name
    faults = {}
    write_trace(output, counted(plan.batches(faults)), metadata, source="simulate")
    if inject_faults and not in_metadata:
        _write_sidecar(sidecar, faults)
    elif sidecar.exists():
        sidecar.unlink()  # a stale list from an earlier run would name the wrong rows
    return output


def injected_faults(trace: str | os.PathLike[str]) -> pa.Table:
    """The selections a simulated trace's `inject_faults` moved: host, seq, expected, observed."""
    metadata = read_metadata(trace)
    if FAULTS_KEY in metadata:
        listed = json.loads(metadata[FAULTS_KEY])
        rows = [(host, *fault) for host in sorted(listed) for fault in listed[host]]
        columns = list(zip(*rows)) if rows else [[], [], [], []]
        return pa.table(dict(zip(FAULT_COLUMNS.names, columns)), schema=FAULT_COLUMNS)
    if FAULTS_FILE_KEY in metadata:
        return pq.read_table(Path(trace).parent / metadata[FAULTS_FILE_KEY], schema=FAULT_COLUMNS)
    if "tracekit.simulate.fault_rate" not in metadata:
        raise TracekitError(f"{trace}: not a simulated trace (no tracekit.simulate.* metadata)")
    return FAULT_COLUMNS.empty_table()


@dataclass
class _Counted:
    """Passes batches through, reporting the rows seen so far to `progress`."""

    progress: Callable[[int, int], None] | None
    total: int
    done: int = 0

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            yield batch
            self.done += batch.num_rows
            if self.progress is not None:
                self.progress(self.done, self.total)


def host_names(hosts: int) -> list[str]:
    """Names that sort in host order, as the trace's (host, seq) order needs."""
    width = max(2, len(str(hosts - 1)))
    return [f"sim-{i:0{width}d}" for i in range(hosts)]


@dataclass(frozen=True)
class _Plan:
    workload: str
    events: int
    seed: int
    fault_rate: float
    hosts: int
    kernel: str | None
    bulk: bool
    layer: str = "kernel"

    def batches(self, faults: dict[str, list[np.ndarray]]) -> Iterator[pa.RecordBatch]:
        """Each host's rows in turn; `faults` receives the faults injected on each host."""
        profile = profile_for_kernel(self.kernel)
        for index, name in enumerate(host_names(self.hosts)):
            share = self.events // self.hosts + (index < self.events % self.hosts)
            simulated = SimHost if self.layer == "kernel" else SocketSimHost
            workloads = WORKLOADS if self.layer == "kernel" else SOCKET_WORKLOADS
            host = simulated(name, profile=profile, events=share, seed=self.seed, index=index,
                             fault_rate=self.fault_rate, bulk=self.bulk)
            try:
                for _ in workloads[self.workload](host):  # type: ignore[operator]
                    if host.rows.rows >= CHUNK_ROWS:
                        yield host.rows.take()
            except HostFull:
                pass
            if host.rows.rows:
                yield host.rows.take()
            faults[name] = host.faults


def _write_sidecar(path: Path, faults: dict[str, list[np.ndarray]]) -> None:
    tables = []
    for host, found in faults.items():
        if found:
            rows = np.concatenate(found)
            tables.append(pa.table({"host": pa.array([host] * len(rows)), "seq": rows[:, 0],
                                    "expected": rows[:, 1], "observed": rows[:, 2]},
                                   schema=FAULT_COLUMNS))
    table = pa.concat_tables(tables) if tables else FAULT_COLUMNS.empty_table()
    scratch = path.with_name(path.name + ".tmp")
    pq.write_table(table, scratch)
    scratch.replace(path)


def _check_arguments(workload: str, events: int, seed: int, inject_faults: float,
                     hosts: int, kernel: str | None, layer: str = "kernel") -> None:
    if layer not in LAYERS:
        raise TracekitError(f"unknown layer {layer!r}; choose one of {', '.join(LAYERS)}")
    if workload not in WORKLOADS:
        raise TracekitError(f"unknown workload {workload!r}; choose one of {', '.join(WORKLOADS)}")
    if layer == "socket" and workload not in SOCKET_WORKLOADS:
        raise TracekitError(f"workload {workload!r} has no socket layer; with --layer socket "
                            f"choose one of {', '.join(SOCKET_WORKLOADS)}")
    if events < 1:
        raise TracekitError(f"--events must be at least 1, got {events}")
    if seed < 0:
        raise TracekitError(f"--seed must be a non-negative integer, got {seed}")
    if not 0.0 <= inject_faults <= 1.0:
        raise TracekitError(f"--inject-faults is a fraction between 0 and 1, got {inject_faults}")
    if hosts < 1 or hosts > events:
        raise TracekitError(f"--hosts must be between 1 and the number of events, got {hosts}")
    if kernel is not None and not is_release(kernel):
        raise TracekitError(f"--kernel {kernel!r} is not a kernel release (`uname -r`, e.g. 6.8.0-45-generic)")
