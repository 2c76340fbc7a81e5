"""`tracekit normalize` against `pyarrow.json.read_json` of the same JSON Lines file.

Builds the fleet benchmark data (`fleet_trace.py`: about 1M real-kernel socket-layer events from
600 hosts, hosts interleaved by time) into a work directory, reused when present, then times,
each in a fresh subprocess: `pyarrow.json.read_json` of ``fleet.jsonl`` and `python -m tracekit
normalize fleet.jsonl -o OUT.parquet`, and checks that the output holds the rows of
``fleet.parquet``. Wall time and the child's own peak RSS.

    python benchmarks/normalize_bench.py                  # 600 hosts
    python benchmarks/normalize_bench.py --hosts 60       # a smoke run

Target (issue 11): normalize <= 3x read_json of the same file.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fleet_trace import GENERATOR_VERSION, REPO, write_fleet  # noqa: E402
from replay_bench import GIB, measure  # noqa: E402

READ_JSON = "import sys, pyarrow.json as pj; print(pj.read_json(sys.argv[1]).num_rows)"
TARGET = 3.0


def fleet_files(workdir: Path, hosts: int):
    """The fleet data for ``hosts`` hosts in ``workdir``, built unless already there."""
    directory = workdir / f"fleet-{hosts}-v{GENERATOR_VERSION}"
    done = directory / "complete"
    if not done.exists():
        write_fleet(directory, hosts)
        done.touch()
    else:
        print(f"reusing {directory}", file=sys.stderr)
    return directory / "fleet.jsonl", directory / "fleet.parquet"


def same_rows(a: Path, b: Path) -> bool:
    import pyarrow.parquet as pq

    return pq.read_table(a).to_pylist() == pq.read_table(b).to_pylist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=600)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "tracekit-bench")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    jsonl, parquet = fleet_files(args.workdir, args.hosts)
    output = jsonl.with_name("normalized.parquet")
    read = measure([sys.executable, "-c", READ_JSON, str(jsonl)])
    normalize = measure([sys.executable, "-m", "tracekit", "normalize", str(jsonl), "-o", str(output)])
    rows = sum(1 for _ in open(jsonl, "rb"))
    ratio = normalize.seconds / read.seconds
    print("| rows | hosts | read_json s | normalize s | normalize/read_json | normalize peak RSS | target |")
    print("|---:|---:|---:|---:|---:|---:|---|")
    print(f"| {rows:,} | {args.hosts} | {read.seconds:.2f} | {normalize.seconds:.2f} | {ratio:.2f}x | "
          f"{normalize.peak_rss / GIB:.2f} GiB | {'ok' if ratio <= TARGET else 'MISSED'} (<= {TARGET:.0f}x) |")
    if not same_rows(output, parquet):
        sys.exit("normalize wrote other rows than fleet.parquet holds")


if __name__ == "__main__":
    main()
