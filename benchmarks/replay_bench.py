"""Replay throughput and memory against a plain Parquet read of the same trace.

Simulates a selection-dominated trace (workload "steady") and a mutation-heavy one (a group change
every 100 events) into a work directory (reused when present with the same arguments), then
measures, each in a fresh subprocess: `pyarrow.parquet.read_table` of the file, and `tracekit
replay` end to end (`python -m tracekit replay TRACE`). Wall time, and peak RSS from `wait4()`'s
rusage of that very child.

    python benchmarks/replay_bench.py                # 20M events
    python benchmarks/replay_bench.py --quick        # 2M events, a smoke run
    python benchmarks/replay_bench.py --events 100000000 --only steady   # the memory target

Targets (issue 6): selection-dominated >= 5M events/s and <= 3x the read_table time; mutation-heavy
>= 1M events/s; peak memory < 1.5 GiB at 100M events.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GIB = 1 << 30
READ = "import sys, pyarrow.parquet as pq; print(pq.read_table(sys.argv[1]).num_rows)"
TARGETS = {"steady": {"rate": 5e6, "ratio": 3.0}, "mutation-heavy": {"rate": 1e6}}
MEMORY_TARGET = 1.5 * GIB


@dataclass(frozen=True)
class Run:
    seconds: float
    peak_rss: int
    returncode: int
    cpu_seconds: float = 0.0  # user + system time of the child (steadier than wall on a busy host)


def measure(argv: list[str]) -> Run:
    """Run `argv` as a child; its wall time and its own peak RSS (bytes)."""
    paths = [str(REPO), os.environ.get("PYTHONPATH")]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, paths)))
    with tempfile.TemporaryFile() as stderr:
        start = time.perf_counter()
        child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=stderr, env=env)
        _pid, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - start
        returncode = os.waitstatus_to_exitcode(status)
        stderr.seek(0)
        if returncode not in (0, 1):
            message = stderr.read().decode(errors="replace")
            sys.exit(f"{' '.join(argv)} failed ({returncode}):\n{message}")
    return Run(seconds, usage.ru_maxrss * 1024, returncode, usage.ru_utime + usage.ru_stime)


def trace_for(workload: str, events: int, seed: int, workdir: Path) -> Path:
    sys.path.insert(0, str(REPO))
    from tracekit.simulator.api import GENERATOR_VERSION, simulate
    from tracekit.trace import read_metadata

    path = workdir / f"{workload}-{events}-{seed}.parquet"
    if path.exists():
        metadata = read_metadata(path)
        if (metadata.get("tracekit.workload"), metadata.get("tracekit.seed"),
                metadata.get("tracekit.simulate.events"),
                metadata.get("tracekit.simulate.version")) == (workload, str(seed), str(events),
                                                               GENERATOR_VERSION):
            print(f"reusing {path}", file=sys.stderr)
            return path
    start = time.perf_counter()
    simulate(workload, events=events, seed=seed, output=path)
    print(f"simulated {events:,} events of {workload} in {time.perf_counter() - start:.1f} s "
          f"({path.stat().st_size / 2**20:.0f} MiB)", file=sys.stderr)
    return path


def bench(workload: str, events: int, seed: int, workdir: Path, replay_command: list[str]) -> dict:
    path = trace_for(workload, events, seed, workdir)
    read = measure([sys.executable, "-c", READ, str(path)])
    replay = measure(replay_command + [str(path)])
    return {"workload": workload, "events": events, "read": read, "replay": replay,
            "rate": events / replay.seconds, "ratio": replay.seconds / read.seconds}


def verdicts(row: dict) -> list[str]:
    target = TARGETS.get(row["workload"], {})
    out = []
    if "rate" in target:
        out.append(f"rate {'ok' if row['rate'] >= target['rate'] else 'MISSED'} "
                   f"(>= {target['rate'] / 1e6:.0f}M/s)")
    if "ratio" in target:
        out.append(f"ratio {'ok' if row['ratio'] <= target['ratio'] else 'MISSED'} "
                   f"(<= {target['ratio']:.0f}x)")
    if row["events"] >= 100_000_000:
        ok = row["replay"].peak_rss < MEMORY_TARGET
        out.append(f"memory {'ok' if ok else 'MISSED'} (< 1.5 GiB)")
    if row["replay"].returncode:
        out.append("replay found mismatches (exit 1): the simulated trace should have none")
    return out


def report(rows: list[dict]) -> str:
    lines = ["| workload | events | read_table s | replay s | replay events/s | replay/read | "
             "replay peak RSS | read peak RSS | targets |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for row in rows:
        lines.append(
            f"| {row['workload']} | {row['events']:,} | {row['read'].seconds:.2f} | "
            f"{row['replay'].seconds:.2f} | {row['rate'] / 1e6:.2f}M | {row['ratio']:.2f}x | "
            f"{row['replay'].peak_rss / GIB:.2f} GiB | {row['read'].peak_rss / GIB:.2f} GiB | "
            f"{'; '.join(verdicts(row))} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000_000)
    parser.add_argument("--mutation-events", type=int, default=None,
                        help="events of the mutation-heavy trace (default: as --events)")
    parser.add_argument("--quick", action="store_true", help="2M events: a smoke run")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--only", choices=["steady", "mutation-heavy"], default=None)
    parser.add_argument("--replay-command", default=f"{sys.executable} -m tracekit replay",
                        help="the command timed, the trace path appended (default: %(default)s)")
    parser.add_argument("--workdir", type=Path,
                        default=Path(tempfile.gettempdir()) / "tracekit-bench")
    args = parser.parse_args()
    events = 2_000_000 if args.quick else args.events
    mutation_events = args.mutation_events or events
    args.workdir.mkdir(parents=True, exist_ok=True)
    plan = [("steady", events), ("mutation-heavy", mutation_events)]
    command = shlex.split(args.replay_command)
    rows = [bench(workload, n, args.seed, args.workdir, command) for workload, n in plan
            if args.only in (None, workload)]
    print(report(rows))


if __name__ == "__main__":
    main()
