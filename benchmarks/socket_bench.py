"""Socket-layer replay throughput against a plain Parquet read of the same trace (issue 11).

Three traces, each measured in fresh subprocesses: `pyarrow.parquet.read_table` of the file, and
`tracekit replay` end to end (`python -m tracekit replay TRACE`), wall and CPU time, peak RSS:

- ``fleet``: the issue's data, about 1M real-kernel socket-layer events from 600 hosts with a
  group change every few events (`benchmarks/fleet_trace.py`, built from the recordings in
  ``fixtures/recorded/fleet/``);
- ``socket-steady``: `tracekit simulate steady --layer socket` (four busy ports, a listener
  replaced every 65536 connections);
- ``socket-mutation-heavy``: `tracekit simulate mutation-heavy --layer socket` (a group change
  every ten events or so).

``--faithful`` also times the per-row path on each trace (the engine with bulk decisions off).

    python benchmarks/socket_bench.py                          # fleet, 20M steady, 2M mutation-heavy
    python benchmarks/socket_bench.py --steady-events 100000000 --only socket-steady   # memory

Targets (issue 11): fleet (mutation-dense real-kernel) >= 250k events/s; socket-steady >= 2M
events/s; 100M socket-steady events in < 2 GiB peak.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from replay_bench import GIB, READ, REPO, measure  # noqa: E402

TARGETS = {"fleet": 250e3, "socket-steady": 2e6}
MEMORY_TARGET = 2 * GIB
FAITHFUL = ("import sys; from tracekit.replay import engine; engine.BULK = False; "
            "from tracekit.cli import main; sys.argv = ['tracekit', 'replay', sys.argv[1]]; main()")


def fleet_trace(workdir: Path) -> Path:
    sys.path.insert(0, str(REPO))
    from fleet_trace import write_fleet

    path = workdir / "fleet" / "fleet.parquet"
    if not path.exists():
        start = time.perf_counter()
        write_fleet(workdir / "fleet")
        print(f"built the fleet trace in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return path


def simulated(workload: str, events: int, seed: int, workdir: Path) -> Path:
    sys.path.insert(0, str(REPO))
    from tracekit.simulator.api import GENERATOR_VERSION, simulate
    from tracekit.trace import read_metadata

    path = workdir / f"socket-{workload}-{events}-{seed}.parquet"
    if path.exists() and read_metadata(path).get("tracekit.simulate.version") == GENERATOR_VERSION:
        return path
    start = time.perf_counter()
    simulate(workload, layer="socket", events=events, seed=seed, output=path)
    print(f"simulated {events:,} socket-layer events of {workload} in "
          f"{time.perf_counter() - start:.1f} s", file=sys.stderr)
    return path


def rows_of(path: Path) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows


def bench(name: str, path: Path, replay: list[str], faithful: bool) -> dict:
    events = rows_of(path)
    read = measure([sys.executable, "-c", READ, str(path)])
    run = measure(replay + [str(path)])
    row = {"name": name, "events": events, "read": read, "replay": run}
    if faithful:
        row["faithful"] = measure([sys.executable, "-c", FAITHFUL, str(path)])
    return row


def verdicts(row: dict) -> list[str]:
    out = []
    rate = row["events"] / row["replay"].seconds
    target = TARGETS.get(row["name"])
    if target is not None:
        out.append(f"rate {'ok' if rate >= target else 'MISSED'} (>= {target / 1e6:g}M/s)")
    if row["name"] == "socket-steady" and row["events"] >= 100_000_000:
        ok = row["replay"].peak_rss < MEMORY_TARGET
        out.append(f"memory {'ok' if ok else 'MISSED'} (< 2 GiB)")
    if row["replay"].returncode:
        out.append("replay found mismatches (exit 1)")
    return out


def report(rows: list[dict]) -> str:
    lines = ["| trace | events | read_table s | replay s (cpu s) | replay events/s | replay/read "
             "| replay peak RSS | per-row path s (cpu s) | targets |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for row in rows:
        read, run = row["read"], row["replay"]
        faithful = row.get("faithful")
        slow = f"{faithful.seconds:.2f} ({faithful.cpu_seconds:.2f})" if faithful else "-"
        lines.append(
            f"| {row['name']} | {row['events']:,} | {read.seconds:.2f} | "
            f"{run.seconds:.2f} ({run.cpu_seconds:.2f}) | "
            f"{_rate(row['events'] / run.seconds)} | {run.seconds / read.seconds:.2f}x | "
            f"{run.peak_rss / GIB:.2f} GiB | {slow} | {'; '.join(verdicts(row))} |")
    return "\n".join(lines)


def _rate(per_second: float) -> str:
    return f"{per_second / 1e6:.2f}M" if per_second >= 1e6 else f"{per_second / 1e3:.1f}k"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steady-events", type=int, default=20_000_000)
    parser.add_argument("--mutation-events", type=int, default=2_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--only", choices=["fleet", "socket-steady", "socket-mutation-heavy"])
    parser.add_argument("--faithful", action="store_true",
                        help="also time the per-row path (slow on the big traces)")
    parser.add_argument("--replay-command", default=f"{sys.executable} -m tracekit replay",
                        help="the command timed, the trace path appended (default: %(default)s)")
    parser.add_argument("--workdir", type=Path,
                        default=Path(tempfile.gettempdir()) / "tracekit-bench")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    plan = {
        "fleet": lambda: fleet_trace(args.workdir),
        "socket-steady": lambda: simulated("steady", args.steady_events, args.seed, args.workdir),
        "socket-mutation-heavy": lambda: simulated("mutation-heavy", args.mutation_events,
                                                   args.seed, args.workdir),
    }
    command = shlex.split(args.replay_command)
    rows = [bench(name, make(), command, args.faithful) for name, make in plan.items()
            if args.only in (None, name)]
    print(report(rows))


if __name__ == "__main__":
    main()
