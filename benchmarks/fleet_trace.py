"""A fleet's socket-layer trace built from real kernel recordings: the issue-11 benchmark data.

The decisions in it are the kernel's, not invented: every host's rows are one of the random walks
recorded on a real Linux kernel by `tracekit record --random SEED --steps 240` (real sockets in a
private network namespace, flow hashes and CPUs from the eBPF observer) and kept in
``fixtures/recorded/fleet/`` (provenance in ``fixtures/recorded/PROVENANCE.md``). Host ``i`` of
the fleet (``host-000`` ...) replays recording ``i % 10`` with its own host name and its clock
shifted to start ``i * STAGGER_NS`` later; its ``seq`` values and every other column are the
recording's. So each host replays with every decision matching, as its recording does.

600 hosts give 982,680 rows (about 1M), the recorder's kind of traffic: syn/accept/reset and
datagram/recv with a socket-, option-, bind-, listen-, close-, shutdown- or sysctl-event every 5
to 8 events.

Two files, same rows:

- ``fleet.jsonl``: the interchange form, hosts interleaved the way merged logs are (by
  ``ts_ns``, each host's rows in its own seq order), null columns left out, binary columns as hex;
- ``fleet.parquet``: a ``tracekit-trace/1`` file written by `tracekit.trace.write_trace`, sorted
  by (host, seq), with the recordings' kernel, observer and ``tracekit.observations`` metadata.

    python benchmarks/fleet_trace.py -o /tmp/fleet            # 600 hosts
    python benchmarks/fleet_trace.py -o /tmp/fleet --hosts 20
    python benchmarks/fleet_trace.py --record                  # re-record the ten walks (root)

Same arguments and same recordings give the same bytes. ``--record`` replaces the recordings with
new ones from this machine's kernel (the operations repeat; the kernel's hashes differ per boot).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

RECORDINGS_DIR = REPO / "fixtures" / "recorded" / "fleet"
SEEDS = tuple(range(1, 11))
STEPS = 240
HOSTS = 600
STAGGER_NS = 3_000_000  # host i starts 3 ms after host i-1: 600 hosts start over 1.8 s
START_NS = 1_000_000_000_000
GENERATOR_VERSION = "1"
_KEPT_METADATA = ("tracekit.kernel", "tracekit.observer", "tracekit.observations", "tracekit.cpus")


def recording_path(seed: int, steps: int = STEPS) -> Path:
    return RECORDINGS_DIR / f"random-{seed}-{steps}.parquet"


def record_walks(seeds: tuple[int, ...] = SEEDS, steps: int = STEPS) -> list[Path]:
    """Record the random walks on this machine's kernel (needs root and BPF); return their paths."""
    RECORDINGS_DIR.mkdir(parents=True, exist_ok=True)
    paths = []
    for seed in seeds:
        path = recording_path(seed, steps)
        subprocess.run([sys.executable, "-m", "tracekit", "record", "--random", str(seed),
                        "--steps", str(steps), "-o", str(path.relative_to(REPO))],
                       cwd=REPO, check=True, stdout=subprocess.DEVNULL)
        paths.append(path)
    return paths


def load_recordings(seeds: tuple[int, ...] = SEEDS, steps: int = STEPS) -> list[pa.Table]:
    """The recorded walks, each sorted by seq as the recorder wrote it."""
    from tracekit.trace import iter_batches

    missing = [recording_path(s, steps) for s in seeds if not recording_path(s, steps).exists()]
    if missing:
        raise SystemExit(f"missing recordings {', '.join(map(str, missing))}: run with --record (as root)")
    tables = []
    for seed in seeds:
        path = recording_path(seed, steps)
        tables.append(pa.Table.from_batches(list(iter_batches(path))))
    return tables


def host_name(index: int) -> str:
    return f"host-{index:03d}"


def fleet_table(hosts: int = HOSTS, recordings: list[pa.Table] | None = None) -> pa.Table:
    """The fleet's rows sorted by (host, seq): host i is recording i % len(recordings)."""
    recordings = recordings if recordings is not None else load_recordings()
    pieces = []
    for index in range(hosts):
        recording = recordings[index % len(recordings)]
        pieces.append(_as_host(recording, index))
    return pa.concat_tables(pieces)


def _as_host(recording: pa.Table, index: int) -> pa.Table:
    rows = recording.num_rows
    host = pa.DictionaryArray.from_arrays(pa.array(np.zeros(rows, np.int32)), pa.array([host_name(index)]))
    return recording.set_column(0, "host", host).set_column(
        recording.schema.get_field_index("ts_ns"), "ts_ns", pa.array(_shifted_clock(recording, index)))


def _shifted_clock(recording: pa.Table, index: int) -> np.ndarray:
    ts = recording.column("ts_ns").to_numpy()
    return ts - ts[0] + START_NS + index * STAGGER_NS


def _json_tails(recording: pa.Table) -> list[str]:
    """Each row as JSON without host and ts_ns: the columns after them, nulls left out."""
    names = [n for n in recording.schema.names if n not in ("host", "seq", "ts_ns")]
    tails = []
    for row in recording.select(names).to_pylist():
        fields = {k: (v.hex() if isinstance(v, bytes) else v) for k, v in row.items() if v is not None}
        tails.append(json.dumps(fields, separators=(",", ":"))[1:])
    return tails


def jsonl_lines(hosts: int = HOSTS, recordings: list[pa.Table] | None = None) -> Iterator[str]:
    """The fleet's rows as JSON Lines, hosts interleaved by ts_ns (ties: host, then seq)."""
    recordings = recordings if recordings is not None else load_recordings()
    tails = [_json_tails(r) for r in recordings]
    seqs = [r.column("seq").to_numpy() for r in recordings]
    owner = [index % len(recordings) for index in range(hosts)]
    clock = np.concatenate([_shifted_clock(recordings[owner[i]], i) for i in range(hosts)])
    host_of = np.concatenate([np.full(recordings[owner[i]].num_rows, i) for i in range(hosts)])
    row_of = np.concatenate([np.arange(recordings[owner[i]].num_rows) for i in range(hosts)])
    for at in np.lexsort((row_of, host_of, clock)):
        host, row = int(host_of[at]), int(row_of[at])
        recording = owner[host]
        yield (f'{{"host":"{host_name(host)}","seq":{seqs[recording][row]},'
               f'"ts_ns":{clock[at]},{tails[recording][row]}\n')


@dataclass(frozen=True)
class FleetFiles:
    jsonl: Path
    parquet: Path
    rows: int
    hosts: int


def write_fleet(directory: str | Path, hosts: int = HOSTS) -> FleetFiles:
    """Write ``fleet.jsonl`` and ``fleet.parquet`` for ``hosts`` hosts into ``directory``."""
    from tracekit.trace import write_trace

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    recordings = load_recordings()
    jsonl, parquet = directory / "fleet.jsonl", directory / "fleet.parquet"
    with open(jsonl, "w", encoding="utf-8") as out:
        out.writelines(jsonl_lines(hosts, recordings))
    table = fleet_table(hosts, recordings)
    write_trace(parquet, table, _metadata(hosts, recordings), source="record")
    return FleetFiles(jsonl, parquet, table.num_rows, hosts)


def _metadata(hosts: int, recordings: list[pa.Table]) -> dict[str, str]:
    first = pq.read_metadata(recording_path(SEEDS[0])).metadata
    kept = {key: first[key.encode()].decode() for key in _KEPT_METADATA if key.encode() in first}
    seeds = ",".join(map(str, SEEDS[:len(recordings)]))
    return {**kept, "tracekit.fleet": f"{hosts} hosts, host i = fixtures/recorded/fleet/random-SEED-{STEPS}"
            f" with SEED = ({seeds})[i % {len(recordings)}]",
            "tracekit.fleet.version": GENERATOR_VERSION}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, help="directory for fleet.jsonl and fleet.parquet")
    parser.add_argument("--hosts", type=int, default=HOSTS)
    parser.add_argument("--record", action="store_true",
                        help=f"re-record the walks into {RECORDINGS_DIR.relative_to(REPO)} first (root)")
    args = parser.parse_args()
    if args.record:
        for path in record_walks():
            print(f"recorded {path.relative_to(REPO)}", file=sys.stderr)
    if args.output is None:
        if not args.record:
            parser.error("give -o DIRECTORY (or --record)")
        return
    start = time.perf_counter()
    files = write_fleet(args.output, args.hosts)
    print(f"{files.rows:,} rows from {files.hosts} hosts in {time.perf_counter() - start:.1f} s: "
          f"{files.jsonl} ({files.jsonl.stat().st_size / 2**20:.0f} MiB), "
          f"{files.parquet} ({files.parquet.stat().st_size / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
