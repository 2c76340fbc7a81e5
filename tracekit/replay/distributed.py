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

What a worker costs beyond its rows (measured on the 600-host fleet trace, issue 11): a row costs
the same CPU in a worker as in one process; the overheads are the cluster's. ``"local"`` therefore
starts its workers from a fork server that imported tracekit (and with it pandas, pyarrow and
distributed) once (`tracekit.replay.localcluster`), instead of spawning fresh interpreters that
each import them again, without the workers' profiler and with Dask's housekeeping slowed. Not a
plain fork of this process: a fork while other threads hold locks (a running cluster's event
loop, Arrow's pools) left a worker hanging on one.
"""

from __future__ import annotations

import bisect
import math
import os
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from itertools import accumulate
from contextlib import ExitStack
from typing import Any, Callable

import pandas as pd

from tracekit.errors import TracekitError
from tracekit.kernel.bpf import Policy
from tracekit.replay.api import Replay, replay
from tracekit.replay.fit import ProfileFit, ProfileScore, best_fit
from tracekit.replay.localcluster import LOCAL_WORKER_CONFIG, LocalClusterStart, local_cluster
from tracekit.replay.timeline import Timeline
from tracekit.replay.sink import MAX_MISMATCHES
from tracekit.replay.summary import overall_verdict
from tracekit.trace.layout import HostRows, host_rows

__all__ = ["replay_on_dask", "merge_replays", "plan_tasks", "shares", "task_count", "local_cluster",
           "LocalClusterStart", "LOCAL_WORKER_CONFIG"]

_COUNTS = ("decisions", "matched", "mismatched", "unknown")


TASKS_PER_WORKER = 4
"""Tasks per worker thread (`task_count`): each task costs a fixed ~36 ms and a read of any row
group it shares with another, so fewer is cheaper until a worker idles at the end. On the
600-host fleet on 2 workers (interleaved on one running cluster): 8 tasks 10.85 s, 16 tasks
11.10 s, 6 tasks 11.8 s (one worker idle at the end)."""
MIN_TASK_ROWS = 16_384


def _replay_hosts(path: str, hosts: list[str], profile: str, policies: dict[str, Policy] | None,
                  results: bool, explain_all: bool) -> Replay:
    part = replay(path, profile=profile, policies=policies, results=results,
                  explain_all=explain_all, hosts=hosts)
    if part.membership is not None:
        part.membership.made()  # the timeline's rows worked out here, beside the other tasks
    return part


def _score_hosts(path: str, hosts: list[str], profile: str,
                 policies: dict[str, Policy] | None) -> tuple[int, int, int]:
    summary = replay(path, profile=profile, policies=policies, hosts=hosts).summary
    return summary["decisions"], summary["mismatched"], summary["unknown"]


def plan_tasks(hosts: Sequence[HostRows], tasks: int,
               workers: int | None = None) -> list[list[str]]:
    """Cut ``hosts`` (in sorted order) into at most ``tasks`` runs of similar row counts, or,
    for ``workers``, of shrinking row counts (`shares`).

    The k-th cut goes where the rows before it come closest to the first k shares of all rows,
    among the ends of units (row group chains), so no two tasks read the same row group; inside a
    unit only when the unit alone holds more rows than the smallest share. Such a cut costs the
    next task one more read of that unit, a few per cent of a share's replay; a share of
    imbalance costs a whole task on the last worker (600 hosts in 15 row groups of 65k rows cut
    for 16 tasks: 16 runs, not 15 of 65k, one worker replaying 8 of them while the other waits).
    """
    if not hosts:
        return []
    tasks = max(1, min(tasks, len(hosts)))
    total = sum(h.rows for h in hosts)
    share = shares(tasks, workers)
    bounds = list(accumulate(share))
    unit_rows: dict[int, int] = {}
    for h in hosts:
        unit_rows[h.unit] = unit_rows.get(h.unit, 0) + h.rows
    ends, before = [], []  # a run may end after hosts[i]; rows up to and including it
    rows = 0
    for i, (h, following) in enumerate(zip(hosts, hosts[1:])):
        rows += h.rows
        if following.unit != h.unit or unit_rows[h.unit] > min(share) * total:
            ends.append(i)
            before.append(rows)
    cuts = set()
    for k in range(1, tasks):
        if not ends:
            break
        target = bounds[k - 1] * total
        at = bisect.bisect_left(before, target)
        nearest = min((j for j in (at - 1, at) if 0 <= j < len(ends)), key=lambda j: abs(before[j] - target))
        cuts.add(ends[nearest])
    runs, start = [], 0
    for end in sorted(cuts):
        runs.append([h.host for h in hosts[start:end + 1]])
        start = end + 1
    runs.append([h.host for h in hosts[start:]])
    return runs


def shares(tasks: int, workers: int | None = None) -> list[float]:
    """The share of all rows of each of ``tasks`` tasks, in the order they are handed out: equal,
    or for ``workers`` taking tasks in that order as they free up, shrinking (guided
    self-scheduling): in rounds of `workers` tasks, each round's weight two less than the one
    before, so the last round is a third of the first for 4 tasks a worker. A worker that draws
    slower rows then waits for the others for at most one small last task, not an average one
    (tasks of equal rows differ by about 20% in CPU)."""
    if not workers or tasks <= workers:
        return [1 / tasks] * tasks
    rounds = math.ceil(tasks / workers)
    weights = [2 * (rounds - i // workers) + 1 for i in range(tasks)]
    return [w / sum(weights) for w in weights]


def task_count(workers: int, total_rows: int, hosts: int) -> int:
    """How many tasks for ``workers``: `TASKS_PER_WORKER` each, of at least `MIN_TASK_ROWS` rows,
    rounded down to a multiple of ``workers`` (5 equal tasks on 2 workers take as long as 6)."""
    count = max(1, min(workers * TASKS_PER_WORKER, total_rows // MIN_TASK_ROWS, hosts))
    return count - count % workers if count > workers else count


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
                   tasks: int | None = None, no_workers_timeout: float = 60.0) -> Replay:
    """Replay a trace in Dask tasks of whole hosts (`plan_tasks`) and merge the results.

    `client` is a `distributed.Client`, a scheduler address (``tcp://host:8786``), ``"local"``
    for a `local_cluster` on this machine (one single-threaded worker process per CPU, forked
    from a fork server), or a `LocalClusterStart` (the same cluster, started earlier; closed
    when the replay ends). Workers must reach `trace_path` (a shared filesystem or the same machine).
    `tasks` overrides the number of tasks (default `task_count` of the cluster's worker threads).
    `progress(hosts_done, hosts_total)` is called as tasks finish. ``profile="fit"`` fits in tasks
    too (every profile over every run of hosts, the counts summed: `best_fit`), then replays
    under the profile it names; the summary says why, as `replay` does.

    A worker lost in the middle costs only time: Dask runs its hosts again on the others (a
    replay of hosts is a pure function of the file), and the merge is the same. When the cluster
    cannot finish (Dask gives up on a task whose workers keep dying, the scheduler goes away, or
    no worker is left for `no_workers_timeout` seconds) it raises `TracekitError` saying so, and
    nothing is merged: there is no partial result.
    """
    try:
        from distributed import Client
    except ImportError:
        raise TracekitError("replay on Dask needs the dask extra: pip install 'tracekit[dask]'") from None

    path = os.fspath(trace_path)
    chosen_by = None
    with ExitStack() as stack:
        if isinstance(client, LocalClusterStart):
            stack.enter_context(client)  # closed when the replay ends, or fails
        hosts = host_rows(path)
        if isinstance(client, LocalClusterStart):
            client = stack.enter_context(Client(client.cluster()))
        elif isinstance(client, str):
            if client == "local":
                cluster = stack.enter_context(local_cluster(min(len(hosts), os.cpu_count() or 1)))
                client = stack.enter_context(Client(cluster))
            else:
                client = stack.enter_context(Client(client))
        if tasks is None:
            workers = sum(client.nthreads().values()) or 1
            tasks = task_count(workers, sum(h.rows for h in hosts), len(hosts))
        runs = plan_tasks(hosts, tasks, workers=len(client.nthreads()) or 1)
        if profile == "fit":
            fit = _fit_on_dask(client, path, runs, policies, no_workers_timeout)
            profile, chosen_by = fit.best.name, fit.describe()
        parts = _run_tasks(client, "replay", _replay_hosts,
                           [(path, run, profile, policies, results, explain_all) for run in runs],
                           progress, no_workers_timeout)
    merged = merge_replays(parts)
    if chosen_by is not None:  # what replay(profile="fit") says, from the same scores
        merged.summary["profile"] = {**merged.summary["profile"], "chosen_by": chosen_by}
    return merged


def _fit_on_dask(client: Any, path: str, runs: list[list[str]], policies: dict[str, Policy] | None,
                 no_workers_timeout: float) -> ProfileFit:
    """`tracekit.replay.fit.fit_profile` in tasks: every profile's counts summed over the runs of
    hosts (hosts share nothing, so the sums are the whole trace's), judged by `best_fit`."""
    from tracekit.kernel.profiles import PROFILES

    calls = [(path, run, p.name, policies) for p in PROFILES for run in runs]
    counts = _run_tasks(client, "fit", _score_hosts, calls, None, no_workers_timeout)
    totals: dict[str, list[int]] = {p.name: [0, 0, 0] for p in PROFILES}
    for (_, _, name, _), count in zip(calls, counts):
        totals[name] = [a + b for a, b in zip(totals[name], count)]
    return best_fit([ProfileScore(p.name, *totals[p.name]) for p in PROFILES])


def _run_tasks(client: Any, kind: str, function: Callable[..., Any], calls: list[tuple],
               progress: Callable[[int, int], None] | None, no_workers_timeout: float) -> list[Any]:
    """``function(path, run, ...)`` for every argument tuple of `calls`, as tasks; their results in
    the order of `calls`."""
    call_id = uuid.uuid4().hex  # a key of this call alone: a previous call's key may still hold its result
    futures = {client.submit(function, *arguments, key=f"tracekit-{kind}-{i}-{arguments[1][0]}-{call_id}",
                             pure=False): arguments[1]
               for i, arguments in enumerate(calls)}
    try:
        return _gather(client, futures, progress, no_workers_timeout)
    except BaseException:
        client.cancel(list(futures))
        raise


def _gather(client: Any, futures: dict[Any, list[str]], progress: Callable[[int, int], None] | None,
            no_workers_timeout: float) -> list[Any]:
    """Every task's result in submission order, or `TracekitError` when the cluster cannot finish."""
    from distributed import wait
    from distributed.client import FutureCancelledError
    from distributed.comm.core import CommClosedError
    from distributed.scheduler import KilledWorker

    pending, done = set(futures), 0
    total = sum(len(run) for run in futures.values())
    alone_since: float | None = None
    results: dict[Any, Any] = {}
    try:
        while pending:
            try:
                finished, pending = wait(pending, timeout=_POLL_SECONDS,
                                         return_when="FIRST_COMPLETED")
            except TimeoutError:  # nothing finished in this while
                finished = set()
            for future in finished:
                # fetched now, while the other tasks run, not all at the end (the worker's
                # exception is raised here)
                results[future] = future.result()
                future.release()
                done += len(futures[future])
                if progress is not None:
                    progress(done, total)
            if finished or client.scheduler_info().get("workers"):
                alone_since = None
            elif alone_since is None:
                alone_since = time.monotonic()
            elif time.monotonic() - alone_since > no_workers_timeout:
                left = sum(len(futures[f]) for f in pending)
                raise TracekitError(f"replay on Dask failed: no worker left for "
                                    f"{no_workers_timeout:g} s with {left} host(s) to "
                                    "replay; nothing was merged")
        return [results[future] for future in futures]
    except KilledWorker as error:
        run = futures.get(_future_of(futures, error.task), ["?"])
        hosts = f"host {run[0]}" if len(run) == 1 else f"hosts {run[0]} to {run[-1]}"
        raise TracekitError(f"replay on Dask failed: each of the {error.allowed_failures + 1} "
                            f"worker(s) replaying {hosts} died, and Dask gave up on it "
                            "(distributed.scheduler.allowed-failures); nothing was merged") from None
    except FutureCancelledError as error:
        raise TracekitError(f"replay on Dask failed: the cluster cancelled a task "
                            f"({error}); nothing was merged") from None
    except (CommClosedError, OSError) as error:
        raise TracekitError(f"replay on Dask failed: lost the Dask scheduler "
                            f"({type(error).__name__}: {error}); nothing was merged") from None


def _future_of(futures: dict[Any, list[str]], key: Any) -> Any:
    return next((future for future in futures if future.key == key), None)


_POLL_SECONDS = 2.0
