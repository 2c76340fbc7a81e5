"""The Python API: `replay()` a trace through the kernel model and get a `Replay` back.

    >>> r = tracekit.replay("trace.parquet")
    >>> r.summary["mismatched"], r.exit_code
    >>> r.decisions            # mismatches and unknowns (every decision with results=True)
    >>> r                      # renders itself in a terminal (rich) or a notebook (HTML)
"""

from __future__ import annotations

import gc
import os
from collections.abc import Collection, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pyarrow as pa
import pyarrow.parquet as pq

from tracekit.errors import StoryError, TracekitError
from tracekit.kernel.bpf import Policy
from tracekit.kernel.profiles import Profile, profile_by_name, profile_for_kernel, why_profile
from tracekit.replay.balance import import_ahead
from tracekit.replay.decision import DECISION_SCHEMA
from tracekit.replay.engine import WALK_ROWS, Engine
from tracekit.replay.gates import ci_outcome
from tracekit.replay.sink import DecisionSink
from tracekit.replay.summary import build_summary
from tracekit.replay.timeline import Timeline, timeline_frame
from tracekit.replay.walk import COLUMNS, DICTIONARIES

__all__ = ["Replay", "replay", "gate", "write_results", "choose_profile", "COMPLETE_KEY"]

COMPLETE_KEY = "tracekit.observations"
"""Metadata key: `complete` when every connection and datagram sent has its fate in the trace
(an accept, recv or reset, or none because the kernel dropped it), as the recorder guarantees."""


@dataclass
class Replay:
    """The result of a replay: `summary` (the `--json` dict), `decisions` (a pandas DataFrame:
    mismatches and unknowns, or every decision when results were requested), `exit_code`
    (0 all matched or unknown, 1 mismatches: with a baseline only new ones, or a failed gate)
    and `groups` (the summary's group entries)."""

    summary: dict[str, Any]
    decisions: Any
    results: list[pa.RecordBatch] | None = field(default=None, repr=False)
    membership: Timeline | None = field(default=None, repr=False)
    settled_from: tuple[int, int, int] | None = field(default=None, repr=False, compare=False)
    """Where the decisions settled only at the end of the trace begin (deferred `recv`s, datagrams
    nobody received): their first row in `decisions`, first batch in `results`, first entry in
    ``summary["mismatches"]``. Merging replays of runs of hosts puts them last, as one replay does."""

    def timeline(self) -> Any:
        """Each group's membership over seq as a pandas DataFrame, one row per change
        (`tracekit.replay.timeline.COLUMNS`): joins, moves into a hole, the closed section,
        departures, and where each migrated connection went."""
        return timeline_frame(self.membership)

    @property
    def exit_code(self) -> int:
        return 0 if ci_outcome(self.summary).passed else 1

    @property
    def groups(self) -> list[dict[str, Any]]:
        return self.summary["groups"]

    def __rich__(self):
        from tracekit.report.terminal import render_replay

        return render_replay(self)

    def _repr_html_(self) -> str:
        from tracekit.report.html import render_html

        return render_html(self)


def choose_profile(profile: str | Profile, metadata: dict[str, str]) -> tuple[Profile, str]:
    """`auto`: the trace's `tracekit.kernel` and `tracekit.kernel.version` (`profile_for_kernel`);
    a name: that profile (TracekitError if unknown). Returns the profile and why it was chosen."""
    if isinstance(profile, Profile):
        return profile, "--profile"
    if profile in (None, "auto"):
        release, version = metadata.get("tracekit.kernel"), metadata.get("tracekit.kernel.version")
        return profile_for_kernel(release, version), why_profile(release, version)
    try:
        return profile_by_name(str(profile)), "--profile"
    except ValueError as err:
        raise TracekitError(str(err)) from None


@contextmanager
def _heap_frozen() -> Iterator[None]:
    """Keep the garbage collector from walking the same objects again and again while a replay
    runs: the objects that exist before it (modules, the caller's data) are frozen (left out of
    every collection) and automatic collection is off until it ends. The model's state of a
    600-host fleet grows to over a million objects that live to the end: walking them in every
    full collection, and each batch's big row lists in every young one, took a fifth of the
    replay's time. The replay makes next to no cyclic garbage (two objects in a whole 60-host
    fleet), so there is nothing to collect that would matter; whatever there is, the collector
    finds after the replay. It covers the making of the result too: the first full collection
    after it walks the whole model state (a second of CPU for a 600-host fleet, in the summary's
    balance figures when it was not covered). Once the replay has returned, its model state is
    garbage (in cycles: a socket and its group point at each other), left to the collector, or
    to the process's exit in a command (`tracekit.teardown`). Nothing is frozen or unfrozen if
    something else froze the heap."""
    enabled = gc.isenabled()
    frozen = not gc.get_freeze_count()
    if frozen:
        gc.freeze()
    gc.disable()
    try:
        yield
    finally:
        if frozen:
            # what the replay made joins the oldest generation too (the first young
            # collection after it would walk all of it otherwise)
            gc.freeze()
            gc.unfreeze()
        if enabled:
            gc.enable()


def _total_rows(path: Path) -> int:
    files = [path] if path.is_file() else sorted(path.rglob("*.parquet"))
    return sum(pq.ParquetFile(f).metadata.num_rows for f in files)


def replay(trace_or_path: str | os.PathLike[str], profile: str | Profile = "auto",
           policies: dict[str, Policy] | None = None, results: bool | str | os.PathLike = False,
           explain_all: bool = False,
           progress: Callable[[int, int], None] | None = None,
           hosts: Collection[str] | None = None,
           baseline: str | os.PathLike[str] | None = None, fail_on: Collection[str] = (),
           what_if: Collection[str] = ()) -> Replay:
    """Replay every host of a trace through the kernel model and diff against what was observed.

    `profile`: a profile name, `auto` (from the trace's `tracekit.kernel`) or `fit` (the profile
    the trace's behaviour fits best: `tracekit.replay.fit.fit_profile`).

    `policies` registers eBPF programs by the name the trace gives them. `results=True` keeps
    every decision (in `Replay.decisions` and for `write_results`); a path streams every decision
    to that Parquet file instead, keeping memory flat. `progress(rows_done, rows_total)` is
    called after each batch. `hosts` replays only those hosts (hosts never share state, so a
    fleet's trace can be replayed host by host: see `tracekit.replay.distributed`).
    For CI (`tracekit.replay.ci`): `baseline` matches the mismatches against a
    `tracekit-baseline/1` file, `fail_on` evaluates gates (`imbalance>1.5`, `resets>0`,
    `unknown>5%`), `what_if` replays again under changes (`net.ipv4.tcp_migrate_req=1`).
    """
    from tracekit.trace import TRACE_FORMAT, iter_batches, read_metadata

    path = Path(trace_or_path)
    if not path.exists():
        raise TracekitError(f"{path}: no such trace file or directory")
    metadata = read_metadata(path)
    found = metadata.get("tracekit.format")
    if found != TRACE_FORMAT:
        raise TracekitError(f"{path}: not a {TRACE_FORMAT} trace (tracekit.format={found!r})")
    if profile == "fit":
        from tracekit.replay.fit import fit_profile

        fit = fit_profile(path, policies=policies)
        chosen, chosen_by = fit.best, fit.describe()
    else:
        chosen, chosen_by = choose_profile(profile, metadata)

    kept: list[pa.RecordBatch] | None = None
    writer = None
    consumer = None
    if results is True:
        kept = []
        consumer = kept.append
    elif results:
        writer = _ResultsWriter(Path(results))
        consumer = writer.write
    chunks = _Chunks(consumer) if consumer is not None else None
    sink = DecisionSink(results=chunks)
    membership = Timeline()
    engine = Engine(chosen, policies, sink=sink, explain_all=explain_all, timeline=membership)
    total = _total_rows(path) if progress is not None or path.is_file() else 0
    ahead = total >= IMPORT_AHEAD_ROWS * 2
    done = 0
    with _heap_frozen():  # until the result is made: the summary's work too (see there)
        try:
            for batch in iter_batches(path, columns=COLUMNS, hosts=hosts,
                                      dictionaries=DICTIONARIES, batch_size=READ_ROWS):
                engine.feed(batch)
                membership.seen_batch(batch)
                done += batch.num_rows
                if ahead and done >= IMPORT_AHEAD_ROWS:
                    import_ahead(stats.load for stats in sink.groups.values())
                    ahead = False
                if progress is not None:
                    progress(done, total)
            engine.drain()
            if chunks is not None:
                chunks.flush()
            settled_from = (sum(b.num_rows for b in kept) if kept is not None else len(sink.kept),
                            len(kept) if kept is not None else 0, len(sink.first_mismatches))
            engine.finish(complete=metadata.get(COMPLETE_KEY) == "complete")
            if chunks is not None:
                chunks.flush()
        except BaseException as error:
            if writer is not None:
                writer.abort()
            if isinstance(error, StoryError):
                raise error.located(str(trace_or_path)) from None
            raise
        if writer is not None:
            writer.close()
        engine.register_groups()
        summary = build_summary(
            sink,
            profile={"name": chosen.name, "chosen_by": chosen_by, "switches": chosen.switches()},
            trace={"path": str(trace_or_path), "format": found,
                   "source": metadata.get("tracekit.source"),
                   "kernel": metadata.get("tracekit.kernel"),
                   "metadata": dict(sorted((k, v) for k, v in metadata.items()
                                           if k.startswith("tracekit.")))},
        )
        if kept is not None:
            table = pa.Table.from_batches(kept, schema=DECISION_SCHEMA)
        else:
            from tracekit.replay.decision import decisions_to_batch

            table = pa.Table.from_batches([decisions_to_batch(sink.kept)], schema=DECISION_SCHEMA)
        result = Replay(summary=summary, decisions=table.to_pandas(), results=kept,
                        membership=membership, settled_from=settled_from)
    return gate(result, baseline=baseline, fail_on=fail_on, what_if=what_if, policies=policies,
                results=results if writer is not None else None)


def gate(result: Replay, *, baseline: str | os.PathLike[str] | None = None,
         fail_on: Collection[str] = (), what_if: Collection[str] = (),
         policies: dict[str, Policy] | None = None,
         results: str | os.PathLike[str] | None = None) -> Replay:
    """The CI additions to a finished replay (`tracekit.replay.ci`): baseline, what-if, gates;
    `results` names a results file written by it, to mark with the baseline column."""
    if baseline is None and not what_if and not fail_on:
        return result
    from tracekit.replay import ci

    if baseline is not None:
        ci.apply_baseline(result, baseline)
        if results:
            ci.mark_results(results, result)
    if what_if:
        ci.apply_what_if(result, list(what_if), policies=policies)
    if fail_on:
        ci.apply_gates(result, fail_on)
    return result


READ_ROWS = 4 * WALK_ROWS
"""Rows read at once: the engine walks them `WALK_ROWS` at a time, and rows a walk holds back
are then a slice of the same batch rather than a copy (only every fourth walk copies them)."""

IMPORT_AHEAD_ROWS = 1_000_000
"""After this many rows of a trace twice as long, the summary's needs are imported meanwhile
(`import_ahead`) if the load so far says they will be needed."""

RESULT_ROWS = 65_536
"""Decisions per results batch (the last before the end-settled decisions, and the last, fewer)."""


class _Chunks:
    """Decision batches passed on re-cut to `RESULT_ROWS` rows each, so that results (and the
    bytes of a results file) do not depend on how the engine cut its input into batches."""

    def __init__(self, consumer: Callable[[pa.RecordBatch], None]) -> None:
        self.consumer = consumer
        self.parts: list[pa.RecordBatch] = []
        self.rows = 0

    def __call__(self, batch: pa.RecordBatch) -> None:
        self.parts.append(batch)
        self.rows += batch.num_rows
        if self.rows >= RESULT_ROWS:
            self._emit(whole=True)

    def flush(self) -> None:
        """Pass on what is kept, as one batch."""
        self._emit(whole=False)

    def _emit(self, whole: bool) -> None:
        if not self.rows:
            return
        table = pa.Table.from_batches(self.parts, schema=DECISION_SCHEMA).combine_chunks()
        done = self.rows - self.rows % RESULT_ROWS if whole else self.rows
        for start in range(0, done, RESULT_ROWS):
            part = table.slice(start, min(RESULT_ROWS, done - start))
            self.consumer(part.combine_chunks().to_batches()[0])
        rest = table.slice(done)
        self.parts = rest.to_batches() if rest.num_rows else []
        self.rows = rest.num_rows


class _ResultsWriter:
    """Streams decision batches into a Parquet file, renamed into place when complete."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tmp = path.with_name(f".{path.name}.partial")
        self.writer = pq.ParquetWriter(self.tmp, DECISION_SCHEMA)

    def write(self, batch: pa.RecordBatch) -> None:
        self.writer.write_batch(batch)

    def close(self) -> None:
        self.writer.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        self.writer.close()
        self.tmp.unlink(missing_ok=True)


def write_results(replay_or_iter: Replay | Iterable[pa.RecordBatch],
                  path: str | os.PathLike[str]) -> Path:
    """Write decisions as Parquet (`DECISION_SCHEMA`): a Replay's (every decision if it was run
    with results=True, else its mismatches and unknowns) or any iterable of decision batches."""
    if isinstance(replay_or_iter, Replay):
        if replay_or_iter.results is not None:
            batches: Iterable[pa.RecordBatch] = replay_or_iter.results
        else:
            table = pa.Table.from_pandas(replay_or_iter.decisions, schema=DECISION_SCHEMA,
                                         preserve_index=False)
            batches = table.to_batches()
    else:
        batches = replay_or_iter
    writer = _ResultsWriter(Path(path))
    try:
        for batch in batches:
            writer.write(batch)
    except BaseException:
        writer.abort()
        raise
    writer.close()
    return Path(path)
