"""Replay a fleet's trace on a Dask cluster, in tasks of whole hosts of similar weight.

Hosts never share sockets or groups, so each run of hosts replays on its own and the results
merge into exactly what a single-process `replay()` gives: the same summary bytes, the same
decisions in the same order. `plan_tasks` cuts the sorted hosts into runs of about equal row
counts (a few per worker, so a slow task does not leave the others idle), at row-group
boundaries where it can, so each task reads only its own row groups (or ``host=`` directories).

    >>> from distributed import Client
    >>> r = replay_on_dask("fleet/", Client("tcp://scheduler:8786"))
    >>> r = replay_on_dask("fleet/", "local")      # a LocalCluster on this machine

Policies travel to the workers by pickle: register module-level functions, not lambdas.
"""

from __future__ import annotations

import bisect
import os
from collections import Counter
from contextlib import ExitStack
from collections.abc import Sequence
from typing import Any, Callable

import pandas as pd

from tracekit.errors import TracekitError
from tracekit.kernel.bpf import Policy
from tracekit.replay.api import Replay, replay
from tracekit.replay.timeline import Timeline
from tracekit.replay.sink import MAX_MISMATCHES
from tracekit.replay.summary import overall_verdict
from tracekit.trace.layout import HostRows, host_rows

__all__ = ["replay_on_dask", "merge_replays", "plan_tasks", "task_count"]

_COUNTS = ("decisions", "matched", "mismatched", "unknown")


TASKS_PER_WORKER = 8
MIN_TASK_ROWS = 16_384


def _replay_hosts(path: str, hosts: list[str], profile: str, policies: dict[str, Policy] | None,
                  results: bool, explain_all: bool) -> Replay:
    return replay(path, profile=profile, policies=policies, results=results,
                  explain_all=explain_all, hosts=hosts)


def plan_tasks(hosts: Sequence[HostRows], tasks: int) -> list[list[str]]:
    """Cut ``hosts`` (in sorted order) into at most ``tasks`` runs of similar row counts.

    The k-th cut goes where the rows before it come closest to k/tasks of all rows, among the
    ends of units (row group chains), so no two tasks read the same row group; inside a unit only
    when the unit alone holds more than two tasks' share (a file written in one big row group).
    """
    if not hosts:
        return []
    tasks = max(1, min(tasks, len(hosts)))
    total = sum(h.rows for h in hosts)
    unit_rows: dict[int, int] = {}
    for h in hosts:
        unit_rows[h.unit] = unit_rows.get(h.unit, 0) + h.rows
    ends, before = [], []  # a run may end after hosts[i]; rows up to and including it
    rows = 0
    for i, (h, following) in enumerate(zip(hosts, hosts[1:])):
        rows += h.rows
        if following.unit != h.unit or unit_rows[h.unit] * tasks > 2 * total:
            ends.append(i)
            before.append(rows)
    cuts = set()
    for k in range(1, tasks):
        if not ends:
            break
        target = k * total / tasks
        at = bisect.bisect_left(before, target)
        nearest = min((j for j in (at - 1, at) if 0 <= j < len(ends)), key=lambda j: abs(before[j] - target))
        cuts.add(ends[nearest])
    runs, start = [], 0
    for end in sorted(cuts):
        runs.append([h.host for h in hosts[start:end + 1]])
        start = end + 1
    runs.append([h.host for h in hosts[start:]])
    return runs


def task_count(workers: int, total_rows: int, hosts: int) -> int:
    """How many tasks for ``workers``: `TASKS_PER_WORKER` each, of at least `MIN_TASK_ROWS` rows."""
    return max(1, min(workers * TASKS_PER_WORKER, total_rows // MIN_TASK_ROWS, hosts))


def merge_replays(parts: list[Replay]) -> Replay:
    """One Replay from Replays of runs of hosts of the same trace, given in host order: what
    a single replay of all of them gives (decisions settled at the end of the trace come after
    every part's others, as `Replay.settled_from` marks them)."""
    if not parts:
        raise TracekitError("nothing to merge: the trace has no hosts")
    first = parts[0].summary
    totals = [sum(p.summary[key] for p in parts) for key in _COUNTS]
    reasons: Counter[str] = Counter()
    for part in parts:
        reasons.update(part.summary["unknown_reasons"])
    marks = [_settled_from(p) for p in parts]
    mismatches = _main_then_settled([p.summary["mismatches"] for p in parts], [m[2] for m in marks])
    summary = {
        "format": first["format"],
        "verdict": overall_verdict(totals),
        **dict(zip(_COUNTS, totals)),
        "profile": first["profile"],
        "trace": first["trace"],
        "hosts": {h: c for part in parts for h, c in sorted(part.summary["hosts"].items())},
        "groups": [g for part in parts for g in part.summary["groups"]],
        "unknown_reasons": dict(sorted(reasons.items())),
        "mismatches": mismatches[:MAX_MISMATCHES],
    }
    frames = [p.decisions for p in parts]
    decisions = pd.concat([f.iloc[:m[0]] for f, m in zip(frames, marks)]
                          + [f.iloc[m[0]:] for f, m in zip(frames, marks)], ignore_index=True)
    results = None
    if all(p.results is not None for p in parts):
        results = _main_then_settled([p.results or [] for p in parts], [m[1] for m in marks])
    membership = Timeline.merged([p.membership for p in parts])
    settled_from = (sum(m[0] for m in marks), sum(m[1] for m in marks),
                    min(sum(m[2] for m in marks), MAX_MISMATCHES))
    return Replay(summary=summary, decisions=decisions, results=results, membership=membership,
                  settled_from=settled_from)


def _settled_from(part: Replay) -> tuple[int, int, int]:
    if part.settled_from is not None:
        return part.settled_from
    return len(part.decisions), len(part.results or ()), len(part.summary["mismatches"])


def _main_then_settled(lists: list[list], cuts: list[int]) -> list:
    return [x for items, cut in zip(lists, cuts) for x in items[:cut]] + \
        [x for items, cut in zip(lists, cuts) for x in items[cut:]]


def replay_on_dask(trace_path: str | os.PathLike[str], client: Any = "local", *,
                   profile: str = "auto", policies: dict[str, Policy] | None = None,
                   results: bool = False, explain_all: bool = False,
                   progress: Callable[[int, int], None] | None = None,
                   tasks: int | None = None) -> Replay:
    """Replay a trace in Dask tasks of whole hosts (`plan_tasks`) and merge the results.

    `client` is a `distributed.Client`, a scheduler address (``tcp://host:8786``), or ``"local"``
    for a LocalCluster on this machine (one single-threaded worker process per CPU). Workers must
    reach `trace_path` (a shared filesystem or the same machine). `tasks` overrides the number of
    tasks (default `task_count` of the cluster's worker threads). `progress(hosts_done,
    hosts_total)` is called as tasks finish.
    """
    try:
        from distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise TracekitError("replay on Dask needs the dask extra: pip install 'tracekit[dask]'") from None

    path = os.fspath(trace_path)
    hosts = host_rows(path)
    with ExitStack() as stack:
        if isinstance(client, str):
            if client == "local":
                cluster = stack.enter_context(LocalCluster(n_workers=min(len(hosts), os.cpu_count() or 1),
                                                           threads_per_worker=1, processes=True,
                                                           dashboard_address=None))
                client = stack.enter_context(Client(cluster))
            else:
                client = stack.enter_context(Client(client))
        if tasks is None:
            workers = sum(client.nthreads().values()) or 1
            tasks = task_count(workers, sum(h.rows for h in hosts), len(hosts))
        runs = plan_tasks(hosts, tasks)
        futures = [client.submit(_replay_hosts, path, run, profile, policies, results, explain_all,
                                 key=f"tracekit-replay-{i}-{run[0]}", pure=False)
                   for i, run in enumerate(runs)]
        sizes = {future.key: len(run) for future, run in zip(futures, runs)}
        done = 0
        for future in as_completed(futures):
            if future.status == "error":
                future.result()  # raises the worker's exception here
            done += sizes[future.key]
            if progress is not None:
                progress(done, len(hosts))
        parts = client.gather(futures)
    return merge_replays(parts)
