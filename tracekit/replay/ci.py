"""Regression gating for CI, over a finished `Replay`: baselines of accepted divergences, load and
reset gates, and what-if replays. The API layer: it reads the baseline file and the trace again;
the matching, the gates and the what-if model are pure (`baseline`, `gates`, `whatif`).

    r = tracekit.replay("t.parquet")
    write_baseline(r, "known.json")                       # accept today's mismatches
    r = tracekit.replay("t.parquet", baseline="known.json", fail_on=["imbalance>1.5"],
                        what_if=["net.ipv4.tcp_migrate_req=1"])
    r.summary["baseline"], r.summary["gates"], r.summary["what_if"], r.exit_code
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import pyarrow as pa
import pyarrow.parquet as pq

from tracekit.errors import TracekitError
from tracekit.replay.baseline import (
    dump_baseline,
    match_baseline,
    occurrences,
    parse_baseline,
)
from tracekit.replay.decision import FIELDS, Decision
from tracekit.replay.gates import evaluate_gates, parse_gate
from tracekit.replay.whatif import compare_what_if, parse_what_if, run_what_if

if TYPE_CHECKING:
    from tracekit.replay.api import Replay

__all__ = ["apply_baseline", "apply_gates", "apply_what_if", "baseline_text", "write_baseline",
           "mark_results", "MAX_LISTED"]

MAX_LISTED = 20
_OCCURRENCE_COLUMNS = ["host", "seq", "event", "sk", "laddr", "lport", "raddr", "rport"]


def _trace_path(replay: Replay) -> Path:
    return Path(replay.summary["trace"]["path"])


def _records(replay: Replay, verdict: str = "mismatch") -> list[dict[str, Any]]:
    """The replay's decisions with one verdict, as plain dicts in (host, seq) order."""
    table = replay.decisions
    if table is None or not len(table):
        return []
    rows = table.loc[table["verdict"] == verdict, list(FIELDS)].sort_values(["host", "seq"],
                                                                          kind="stable")
    rows = rows.astype(object).where(rows.notna(), None)
    return [{name: _plain(value) for name, value in record.items()}
            for record in rows.to_dict("records")]


def _plain(value: Any) -> Any:
    item = getattr(value, "item", None)  # numpy scalars
    return item() if callable(item) and not isinstance(value, (str, bytes)) else value


def _occurrences(replay: Replay, records: list[dict[str, Any]]) -> dict[tuple[str, int], int]:
    from tracekit.trace import iter_batches

    hosts = sorted({str(r["host"]) for r in records})
    if not hosts:
        return {}
    return occurrences(iter_batches(_trace_path(replay), columns=_OCCURRENCE_COLUMNS, hosts=hosts),
                       records)


def baseline_text(replay: Replay) -> bytes:
    """`tracekit-baseline/1` accepting every mismatch of this replay."""
    records = _records(replay)
    return dump_baseline(records, _occurrences(replay, records))


def write_baseline(replay: Replay, path: str | os.PathLike[str]) -> Path:
    """Write `baseline_text(replay)` to `path` (whole or not at all)."""
    from tracekit.trace.output import atomic_path

    with atomic_path(Path(path)) as tmp:
        tmp.write_bytes(baseline_text(replay))
    return Path(path)


def apply_baseline(replay: Replay, baseline: str | os.PathLike[str]) -> Replay:
    """Match the replay's mismatches against a baseline file: `summary["baseline"]` gets the
    counts (known, new, fixed) and the first new mismatches and fixed divergences; the decision
    table gets a `baseline` column (`new`/`known` on mismatches). The exit code then counts only
    the new ones."""
    path = Path(baseline)
    try:
        text = path.read_bytes()
    except OSError as err:
        raise TracekitError(f"{path}: cannot read the baseline: {err.strerror}") from None
    known = parse_baseline(text, str(path))
    records = _records(replay)
    match = match_baseline(records, _occurrences(replay, records), known)
    replay.summary["baseline"] = {
        "path": str(baseline),
        "known": len(match.known), "new": len(match.new), "fixed": len(match.fixed),
        "new_mismatches": [_decision_dict(r) for _, r in match.new[:MAX_LISTED]],
        "fixed_divergences": [entry for _, entry in match.fixed[:MAX_LISTED]],
    }
    status = match.status()
    table = replay.decisions
    if table is not None:
        table["baseline"] = [status.get((str(h), int(s))) for h, s in zip(table["host"], table["seq"])]
        table.loc[table["verdict"] != "mismatch", "baseline"] = None
    return replay


def _decision_dict(record: dict[str, Any]) -> dict[str, Any]:
    return {name: record.get(name) for name in FIELDS}


def mark_results(path: str | os.PathLike[str], replay: Replay) -> None:
    """Add the `baseline` column (`new`/`known` on mismatches, else null) to a results file
    written by this replay, in place (through a temporary file)."""
    table = replay.decisions
    if table is None or "baseline" not in table.columns:
        return
    status = {(str(h), int(s)): b for h, s, b in zip(table["host"], table["seq"], table["baseline"])
              if isinstance(b, str)}
    path = Path(path)
    source = pq.ParquetFile(path)
    schema = source.schema_arrow.append(pa.field("baseline", pa.string()))
    tmp = path.with_name(f".{path.name}.baseline")
    try:
        with pq.ParquetWriter(tmp, schema) as writer:
            for batch in source.iter_batches():
                hosts, seqs = batch.column("host").to_pylist(), batch.column("seq").to_pylist()
                verdicts = batch.column("verdict").to_pylist()
                column = pa.array([status.get((h, s)) if v == "mismatch" else None
                                   for h, s, v in zip(hosts, seqs, verdicts)], pa.string())
                writer.write_batch(pa.RecordBatch.from_arrays([*batch.columns, column], schema=schema))
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def apply_gates(replay: Replay, specs: Iterable[str]) -> Replay:
    """Evaluate `--fail-on` gates; `summary["gates"]` lists each with its failures."""
    gates = [parse_gate(spec) for spec in specs]
    if gates:
        replay.summary["gates"] = evaluate_gates(gates, replay.summary)
    return replay


def apply_what_if(replay: Replay, specs: Sequence[str], *, policies: dict[str, Callable] | None = None
                  ) -> Replay:
    """Replay the trace again under the changes `specs` and put what would differ from what was
    observed in `summary["what_if"]`."""
    from tracekit.kernel.profiles import profile_by_name
    from tracekit.replay.api import COMPLETE_KEY
    from tracekit.replay.walk import COLUMNS
    from tracekit.trace import iter_batches

    what_if = parse_what_if(specs)
    if not what_if:
        return replay
    summary = replay.summary
    profile = profile_by_name(summary["profile"]["name"])
    complete = summary["trace"]["metadata"].get(COMPLETE_KEY) == "complete"
    sink, applied = run_what_if(iter_batches(_trace_path(replay), columns=COLUMNS), profile,
                                policies, what_if, complete)
    plain = [Decision(**{name: r.get(name) for name in FIELDS})
             for verdict in ("mismatch", "unknown") for r in _records(replay, verdict)]
    summary["what_if"] = compare_what_if(plain, summary["groups"], what_if, sink, applied)
    return replay
