"""Replay of the 600-host fleet trace: single process against Dask, and how it would scale.

On the fleet benchmark data (`fleet_trace.py`: about 1M real-kernel socket-layer events from 600
hosts), each in a fresh subprocess: `pyarrow.parquet.read_table` of the file (the anchor),
`tracekit replay TRACE` single-process, and `tracekit replay TRACE --dask local` (a LocalCluster
with one single-threaded worker process per CPU, started inside the command: `local_cluster`).
Then, in this process, against a cluster already running with the same workers: `replay_on_dask`
with Dask's task stream recorded (start and end of every task on its worker); afterwards a round
of no-op tasks (the scheduler's cost per task) and tasks of the smallest host alone (a task's
fixed cost). Every replay's `--json` summary must be byte-identical.

From those measurements it simulates W workers (`simulate`): the planner's tasks for W workers
(`plan_tasks`, shrinking task by task), each costing the fitted ``fixed + per_row * rows`` plus re-reading any row group
another task also reads, list-scheduled in submission order; plus the scheduler's cost per task,
the client's serial work (planning, merging) and, past one machine, moving each task's result
over the network (``--network-mbps``). A model, not a measurement: it says where the curve bends.
Its speed-ups are given over the measured single process and over its own one worker (the same
costs, so the machine's load while the single process ran does not enter).

Each step runs ``--rounds`` times (default 2), interleaved, and the fastest run of each counts; the
CPU seconds (user + system of the step's processes; for the running cluster its workers included,
for ``--dask local`` not available: its workers are the fork server's children) show what a run
cost where other work on the machine stretched its wall time; the load average is printed per round.

    python benchmarks/fleet_replay_bench.py                 # 600 hosts, 2 workers here
    python benchmarks/fleet_replay_bench.py --hosts 60      # a smoke run

Target (issue 11): Dask with 2 workers >= 1.6x faster than single-process on this 2-core machine.
"""

from __future__ import annotations

import argparse
import heapq
import os
import pickle
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from normalize_bench import fleet_files  # noqa: E402
from replay_bench import READ, measure  # noqa: E402

TARGET = 1.6


@dataclass(frozen=True)
class Costs:
    fixed: float          # seconds per task beyond its rows (open, metadata, result building)
    per_row: float        # seconds per row replayed
    per_group_read: float  # seconds to read one row group again
    scheduler: float      # seconds of scheduler and client time per task
    serial: float         # seconds of client-side planning and merging
    result_bytes: float   # pickled result size per task, bytes


def fit(durations: list[float], rows: list[int], fixed: float) -> float:
    """Seconds per row of the replay tasks, beyond the ``fixed`` seconds every task costs."""
    return max(0.0, sum(durations) - fixed * len(durations)) / max(sum(rows), 1)


def simulate(hosts, workers: int, costs: Costs, network_mbps: float | None) -> float:
    """Predicted wall time of a replay on ``workers`` single-threaded workers."""
    from tracekit.replay.distributed import plan_tasks, task_count

    runs = plan_tasks(hosts, task_count(workers, sum(h.rows for h in hosts), len(hosts)), workers)
    unit_of = {h.host: h.unit for h in hosts}
    rows_of = {h.host: h.rows for h in hosts}
    readers: dict[int, int] = {}
    for run in runs:
        for unit in {unit_of[h] for h in run}:
            readers[unit] = readers.get(unit, 0) + 1
    free = [0.0] * workers
    transfer = 0.0
    for run in runs:  # list scheduling in submission order: the next task to the first free worker
        shared = sum(readers[u] > 1 for u in {unit_of[h] for h in run})
        cost = costs.fixed + costs.per_row * sum(rows_of[h] for h in run) + costs.per_group_read * shared
        heapq.heappush(free, heapq.heappop(free) + cost)
        if network_mbps:
            transfer += costs.result_bytes * 8 / (network_mbps * 1e6)
    return max(free) + costs.scheduler * len(runs) + costs.serial + transfer


def compute_spans(stream: list[dict], kind: str = "tracekit-replay") -> dict[str, float]:
    """Seconds each task of the task stream computed, by the first host of its run."""
    spans = {}
    for task in stream:
        key = str(task["key"])
        span = [s for s in task["startstops"] if s["action"] == "compute"]
        if key.startswith(kind) and span:  # tracekit-KIND-I-HOST-CALL
            spans[key.rsplit("-", 1)[0].split("-", 3)[-1]] = span[0]["stop"] - span[0]["start"]
    return spans


class RunningCluster:
    """`local_cluster` (what ``--dask local`` starts) kept running across rounds: replays on it,
    with Dask's task stream and the CPU of every process of it (workers, and this process with the
    scheduler, nannies and client)."""

    def __init__(self, workers: int) -> None:
        from distributed import Client

        from tracekit.replay.distributed import local_cluster

        self.cluster = local_cluster(workers)
        self.client = Client(self.cluster)

    def cpu(self) -> float:
        return sum(self.client.run(time.process_time).values()) + time.process_time()

    def replay(self, path: Path):
        from distributed import get_task_stream

        from tracekit.replay.distributed import replay_on_dask

        cpu = self.cpu()
        with get_task_stream(self.client) as stream:
            start = time.perf_counter()
            result = replay_on_dask(path, self.client)
            seconds = time.perf_counter() - start
        return seconds, self.cpu() - cpu, stream.data, result

    def per_task(self, path: Path, host: str) -> tuple[float, float]:
        """The scheduler's cost per task (a round of no-op tasks) and the compute time of a task
        of one small host (a task's fixed cost plus that host's few rows)."""
        from distributed import get_task_stream

        from tracekit.replay.distributed import _replay_hosts

        noops = 200
        start = time.perf_counter()
        self.client.gather([self.client.submit(int, i, pure=False) for i in range(noops)])
        scheduler = (time.perf_counter() - start) / noops
        spans = []
        for i in range(4):
            with get_task_stream(self.client) as stream:
                self.client.submit(_replay_hosts, str(path), [host], "auto", None, False, False,
                                   key=f"tracekit-replay-{i}-{host}-one", pure=False).result()
            spans += list(compute_spans(stream.data).values())
        return scheduler, min(spans)

    def close(self) -> None:
        self.client.close()
        self.cluster.close()


def load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=600)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--rounds", type=int, default=2,
                        help="rounds of every step, interleaved; the fastest of each counts (default: %(default)s)")
    parser.add_argument("--network-mbps", type=float, default=1000.0,
                        help="network between machines for the scaling model (default: %(default)s)")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "tracekit-bench")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tracekit.replay.distributed import merge_replays, plan_tasks, task_count
    from tracekit.report.json import summary_json
    from tracekit.trace.layout import host_rows

    _jsonl, trace = fleet_files(args.workdir, args.hosts)
    out = trace.parent
    cluster = RunningCluster(args.workers)
    steps: dict[str, list[tuple[float, float]]] = {"read": [], "single": [], "dask": [], "warm": []}
    identical = True
    for round_ in range(args.rounds):
        before = load()
        read = measure([sys.executable, "-c", READ, str(trace)])
        single = measure([sys.executable, "-m", "tracekit", "replay", str(trace),
                          "--json", str(out / "single.json")])
        dask = measure([sys.executable, "-m", "tracekit", "replay", str(trace), "--dask", "local",
                        "--json", str(out / "dask.json")])
        warm, warm_cpu, round_stream, result = cluster.replay(trace)
        if round_ == 0 or warm < min(w for w, _ in steps["warm"]):
            stream = round_stream
        single_json = (out / "single.json").read_bytes()
        identical &= single_json == (out / "dask.json").read_bytes() == summary_json(result.summary)
        for name, run in (("read", read), ("single", single), ("dask", dask)):
            steps[name].append((run.seconds, run.cpu_seconds))
        steps["warm"].append((warm, warm_cpu))
        print(f"round {round_ + 1}: read_table {read.seconds:.2f} s; single-process {single.seconds:.2f} s "
              f"(cpu {single.cpu_seconds:.1f}); --dask local {dask.seconds:.2f} s; "
              f"running cluster {warm:.2f} s (cpu {warm_cpu:.1f}); identical {identical}; "
              f"load average {before} -> {load()}", flush=True)

    hosts = host_rows(trace)
    smallest = min(hosts, key=lambda h: h.rows)
    scheduler, tiny = cluster.per_task(trace, smallest.host)
    cluster.close()
    start = time.perf_counter()
    hosts = host_rows(trace)
    runs = plan_tasks(hosts, task_count(args.workers, sum(h.rows for h in hosts), len(hosts)),
                      args.workers)
    planning = time.perf_counter() - start
    rows_of = {h.host: h.rows for h in hosts}
    by_first = {run[0]: sum(rows_of[h] for h in run) for run in runs}
    spans = compute_spans(stream)
    durations = [spans[first] for first in by_first if first in spans]
    rows = [by_first[first] for first in by_first if first in spans]
    if not durations:
        sys.exit("no task of the replay in Dask's task stream")
    per_row = fit(durations, rows, tiny)
    fixed = max(0.0, tiny - per_row * smallest.rows)
    import pyarrow.parquet as pq

    groups = pq.ParquetFile(trace).metadata.num_row_groups
    start = time.perf_counter()
    merge_replays([result])
    best = {name: min(runs_) for name, runs_ in steps.items()}
    read_s, single_s, dask_s, warm_s = (best[name][0] for name in ("read", "single", "dask", "warm"))
    costs = Costs(fixed=fixed, per_row=per_row, per_group_read=read_s / groups,
                  scheduler=scheduler, serial=planning + (time.perf_counter() - start),
                  result_bytes=len(pickle.dumps(result)) / len(runs))

    print(f"fleet trace: {sum(rows_of.values()):,} rows, {len(hosts)} hosts, {groups} row groups; "
          f"{len(runs)} tasks for {args.workers} workers; summaries byte-identical: {identical}; "
          f"fastest of {args.rounds} round(s) each")
    print()
    print("| step | seconds | CPU s | / read_table | speed-up over single-process |")
    print("|---|---:|---:|---:|---:|")
    print(f"| `read_table` | {read_s:.2f} | {best['read'][1]:.2f} | 1.00x | |")
    print(f"| `tracekit replay` (single process) | {single_s:.2f} | {best['single'][1]:.1f} | "
          f"{single_s / read_s:.2f}x | 1.00x |")
    # its workers are the fork server's children, not the command's: wait4() does not count them
    print(f"| `tracekit replay --dask local` ({args.workers} workers, cluster start included) | "
          f"{dask_s:.2f} | n/a | {dask_s / read_s:.2f}x | {single_s / dask_s:.2f}x |")
    print(f"| `replay_on_dask` on a running cluster ({args.workers} workers) | {warm_s:.2f} | "
          f"{best['warm'][1]:.1f} | {warm_s / read_s:.2f}x | {single_s / warm_s:.2f}x |")
    verdict = "ok" if single_s / dask_s >= TARGET else "MISSED"
    print(f"\ntarget: --dask local >= {TARGET}x over single-process: {verdict}")
    print(f"\nmeasured per task: fixed {costs.fixed * 1e3:.0f} ms (a one-host task: {tiny * 1e3:.0f} ms) + "
          f"{costs.per_row * 1e6:.1f} us/row (over {len(durations)} tasks); scheduler "
          f"{costs.scheduler * 1e3:.1f} ms/task; client serial {costs.serial * 1e3:.0f} ms; re-read "
          f"{costs.per_group_read * 1e3:.0f} ms/row group; result {costs.result_bytes / 1e3:.0f} kB/task")
    print("\n| workers | tasks | predicted s | predicted speed-up over single-process | over 1 worker (model) |")
    print("|---:|---:|---:|---:|---:|")
    alone = simulate(hosts, 1, costs, None)
    for workers in (1, 2, 4, 8, 16, 32, 64):
        network = args.network_mbps if workers > args.workers else None
        predicted = simulate(hosts, workers, costs, network)
        count = len(plan_tasks(hosts, task_count(workers, sum(rows_of.values()), len(hosts)), workers))
        print(f"| {workers} | {count} | {predicted:.2f} | {single_s / predicted:.2f}x | {alone / predicted:.2f}x |")
    if not identical:
        sys.exit("the Dask summaries differ from the single-process summary")


if __name__ == "__main__":
    main()
