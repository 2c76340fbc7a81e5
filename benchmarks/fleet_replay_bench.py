"""Replay of the 600-host fleet trace: single process against Dask, and how it would scale.

On the fleet benchmark data (`fleet_trace.py`: about 1M real-kernel socket-layer events from 600
hosts), each in a fresh subprocess: `pyarrow.parquet.read_table` of the file (the anchor),
`tracekit replay TRACE` single-process, and `tracekit replay TRACE --dask local` (a LocalCluster
with one single-threaded worker process per CPU, started inside the command: `local_cluster`).
Then, in this process, against a cluster already running with the same workers: `replay_on_dask` with Dask's
task stream recorded (start and end of every task on its worker) and a round of no-op tasks
(the scheduler's cost per task). Every replay's `--json` summary must be byte-identical.

From those measurements it simulates W workers (`simulate`): the planner's tasks for W workers
(`plan_tasks`), each costing the fitted ``fixed + per_row * rows`` plus re-reading any row group
another task also reads, list-scheduled in submission order; plus the scheduler's cost per task,
the client's serial work (planning, merging) and, past one machine, moving each task's result
over the network (``--network-mbps``). A model, not a measurement: it says where the curve bends.

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


def fit(durations: list[float], rows: list[int]) -> tuple[float, float]:
    """Least-squares ``duration = fixed + per_row * rows`` (fixed clipped at 0)."""
    n = len(rows)
    mean_r, mean_d = sum(rows) / n, sum(durations) / n
    spread = sum((r - mean_r) ** 2 for r in rows)
    per_row = (sum((r - mean_r) * (d - mean_d) for r, d in zip(rows, durations)) / spread
               if spread else mean_d / max(mean_r, 1))
    return max(0.0, mean_d - per_row * mean_r), per_row


def simulate(hosts, workers: int, costs: Costs, network_mbps: float | None) -> float:
    """Predicted wall time of a replay on ``workers`` single-threaded workers."""
    from tracekit.replay.distributed import plan_tasks, task_count

    runs = plan_tasks(hosts, task_count(workers, sum(h.rows for h in hosts), len(hosts)))
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


def in_process(path: Path, workers: int):
    """replay_on_dask on a running cluster (`local_cluster`, what ``--dask local`` starts): wall
    time, task stream, scheduler cost per task."""
    from distributed import Client, get_task_stream

    from tracekit.replay.distributed import local_cluster, replay_on_dask
    from tracekit.report.json import summary_json

    with local_cluster(workers) as cluster, Client(cluster) as client:
        with get_task_stream(client) as stream:
            start = time.perf_counter()
            result = replay_on_dask(path, client)
            seconds = time.perf_counter() - start
        noops = 200
        start = time.perf_counter()
        client.gather([client.submit(int, i, pure=False) for i in range(noops)])
        per_task = (time.perf_counter() - start) / noops
        tasks = [t for t in stream.data if str(t["key"]).startswith("tracekit-replay")]
    return seconds, tasks, per_task, summary_json(result.summary), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=600)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--network-mbps", type=float, default=1000.0,
                        help="network between machines for the scaling model (default: %(default)s)")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "tracekit-bench")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tracekit.replay.distributed import plan_tasks, task_count
    from tracekit.trace.layout import host_rows

    _jsonl, trace = fleet_files(args.workdir, args.hosts)
    out = trace.parent
    read = measure([sys.executable, "-c", READ, str(trace)])
    single = measure([sys.executable, "-m", "tracekit", "replay", str(trace), "--json", str(out / "single.json")])
    dask = measure([sys.executable, "-m", "tracekit", "replay", str(trace), "--dask", "local",
                    "--json", str(out / "dask.json")])
    warm, stream, scheduler, warm_json, result = in_process(trace, args.workers)
    single_json = (out / "single.json").read_bytes()
    identical = single_json == (out / "dask.json").read_bytes() == warm_json

    start = time.perf_counter()
    hosts = host_rows(trace)
    runs = plan_tasks(hosts, task_count(args.workers, sum(h.rows for h in hosts), len(hosts)))
    planning = time.perf_counter() - start
    rows_of = {h.host: h.rows for h in hosts}
    by_first = {run[0]: sum(rows_of[h] for h in run) for run in runs}
    durations, rows = [], []
    for task in stream:
        first = str(task["key"]).rsplit("-", 1)[0].split("-", 3)[-1]  # tracekit-replay-I-HOST-CALL
        span = [s for s in task["startstops"] if s["action"] == "compute"]
        if first in by_first and span:
            durations.append(span[0]["stop"] - span[0]["start"])
            rows.append(by_first[first])
    print(f"read_table {read.seconds:.2f} s; single-process {single.seconds:.2f} s; --dask local "
          f"{dask.seconds:.2f} s; running cluster {warm:.2f} s; identical {identical}", flush=True)
    if not durations:
        sys.exit("no task of the replay in Dask's task stream")
    fixed, per_row = fit(durations, rows)
    import pyarrow.parquet as pq

    groups = pq.ParquetFile(trace).metadata.num_row_groups
    start = time.perf_counter()
    from tracekit.replay.distributed import merge_replays
    merge_replays([result])
    costs = Costs(fixed=fixed, per_row=per_row, per_group_read=read.seconds / groups,
                  scheduler=scheduler, serial=planning + (time.perf_counter() - start),
                  result_bytes=len(pickle.dumps(result)) / len(runs))

    print(f"fleet trace: {sum(rows_of.values()):,} rows, {len(hosts)} hosts, {groups} row groups; "
          f"{len(runs)} tasks for {args.workers} workers; summaries byte-identical: {identical}")
    print()
    print("| step | seconds | / read_table | speed-up over single-process |")
    print("|---|---:|---:|---:|")
    print(f"| `read_table` | {read.seconds:.2f} | 1.00x | |")
    print(f"| `tracekit replay` (single process) | {single.seconds:.2f} | {single.seconds / read.seconds:.2f}x | 1.00x |")
    print(f"| `tracekit replay --dask local` ({args.workers} workers, cluster start included) | "
          f"{dask.seconds:.2f} | {dask.seconds / read.seconds:.2f}x | {single.seconds / dask.seconds:.2f}x |")
    print(f"| `replay_on_dask` on a running cluster ({args.workers} workers) | {warm:.2f} | "
          f"{warm / read.seconds:.2f}x | {single.seconds / warm:.2f}x |")
    verdict = "ok" if single.seconds / dask.seconds >= TARGET else "MISSED"
    print(f"\ntarget: --dask local >= {TARGET}x over single-process: {verdict}")
    print(f"\nmeasured per task: fixed {costs.fixed * 1e3:.0f} ms + {costs.per_row * 1e6:.1f} us/row "
          f"(fit over {len(durations)} tasks); scheduler {costs.scheduler * 1e3:.1f} ms/task; "
          f"client serial {costs.serial * 1e3:.0f} ms; re-read {costs.per_group_read * 1e3:.0f} ms/row group; "
          f"result {costs.result_bytes / 1e3:.0f} kB/task")
    print("\n| workers | tasks | predicted s | predicted speed-up over single-process |")
    print("|---:|---:|---:|---:|")
    for workers in (1, 2, 4, 8, 16, 32, 64):
        network = args.network_mbps if workers > args.workers else None
        predicted = simulate(hosts, workers, costs, network)
        count = len(plan_tasks(hosts, task_count(workers, sum(rows_of.values()), len(hosts))))
        print(f"| {workers} | {count} | {predicted:.2f} | {single.seconds / predicted:.2f}x |")
    if not identical:
        sys.exit("the Dask summaries differ from the single-process summary")


if __name__ == "__main__":
    main()
