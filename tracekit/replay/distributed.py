"""Replay a fleet's trace on a Dask cluster, one task per host.

Hosts never share sockets or groups, so each host replays on its own and the per-host results
merge into exactly what a single-process `replay()` gives: the same summary bytes, the same
decisions in the same order.

    >>> from distributed import Client
    >>> r = replay_on_dask("fleet/", Client("tcp://scheduler:8786"))
    >>> r = replay_on_dask("fleet/", "local")      # a LocalCluster on this machine

Policies travel to the workers by pickle: register module-level functions, not lambdas.
"""

from __future__ import annotations

import os
import time
import uuid
from collections import Counter
from contextlib import ExitStack
from typing import Any, Callable

import pandas as pd

from tracekit.errors import TracekitError
from tracekit.kernel.bpf import Policy
from tracekit.replay.api import Replay, replay
from tracekit.replay.timeline import Timeline
from tracekit.replay.sink import MAX_MISMATCHES
from tracekit.replay.summary import overall_verdict

__all__ = ["replay_on_dask", "merge_replays"]

_COUNTS = ("decisions", "matched", "mismatched", "unknown")


def _replay_host(path: str, host: str, profile: str, policies: dict[str, Policy] | None,
                 results: bool, explain_all: bool) -> Replay:
    return replay(path, profile=profile, policies=policies, results=results,
                  explain_all=explain_all, hosts=[host])


def merge_replays(parts: list[Replay]) -> Replay:
    """One Replay from per-host Replays of the same trace, given in host order."""
    if not parts:
        raise TracekitError("nothing to merge: the trace has no hosts")
    first = parts[0].summary
    totals = [sum(p.summary[key] for p in parts) for key in _COUNTS]
    reasons: Counter[str] = Counter()
    for part in parts:
        reasons.update(part.summary["unknown_reasons"])
    mismatches = [m for part in parts for m in part.summary["mismatches"]][:MAX_MISMATCHES]
    summary = {
        "format": first["format"],
        "verdict": overall_verdict(totals),
        **dict(zip(_COUNTS, totals)),
        "profile": first["profile"],
        "trace": first["trace"],
        "hosts": {h: c for part in parts for h, c in sorted(part.summary["hosts"].items())},
        "groups": [g for part in parts for g in part.summary["groups"]],
        "unknown_reasons": dict(sorted(reasons.items())),
        "mismatches": mismatches,
    }
    decisions = pd.concat([p.decisions for p in parts], ignore_index=True)
    results = None
    if all(p.results is not None for p in parts):
        results = [batch for p in parts for batch in p.results or ()]
    membership = Timeline.merged([p.membership for p in parts])
    return Replay(summary=summary, decisions=decisions, results=results, membership=membership)


def replay_on_dask(trace_path: str | os.PathLike[str], client: Any = "local", *,
                   profile: str = "auto", policies: dict[str, Policy] | None = None,
                   results: bool = False, explain_all: bool = False,
                   progress: Callable[[int, int], None] | None = None,
                   no_workers_timeout: float = 60.0) -> Replay:
    """Replay every host of a trace as one Dask task each and merge the results.

    `client` is a `distributed.Client`, a scheduler address (``tcp://host:8786``), or ``"local"``
    for a LocalCluster on this machine. Workers must reach `trace_path` (a shared filesystem or
    the same machine). `progress(hosts_done, hosts_total)` is called as hosts finish.

    A worker lost in the middle costs only time: Dask runs its hosts again on the others (a
    host's replay is a pure function of the file), and the merge is the same. When the cluster
    cannot finish (Dask gives up on a task whose workers keep dying, the scheduler goes away, or
    no worker is left for `no_workers_timeout` seconds) it raises `TracekitError` saying so, and
    nothing is merged: there is no partial result.
    """
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise TracekitError("replay on Dask needs the dask extra: pip install 'tracekit[dask]'") from None
    from tracekit.trace import trace_hosts

    path = os.fspath(trace_path)
    hosts = trace_hosts(path)
    with ExitStack() as stack:
        if isinstance(client, str):
            if client == "local":
                cluster = stack.enter_context(LocalCluster(n_workers=min(len(hosts), os.cpu_count() or 1),
                                                           threads_per_worker=1, processes=True,
                                                           dashboard_address=None))
                client = stack.enter_context(Client(cluster))
            else:
                client = stack.enter_context(Client(client))
        # a key of this call alone: a key a previous call used may still hold that call's result
        run = uuid.uuid4().hex
        futures = {client.submit(_replay_host, path, host, profile, policies, results, explain_all,
                                 key=f"tracekit-replay-{host}-{i}-{run}", pure=False): host
                   for i, host in enumerate(hosts)}
        try:
            parts = _gather(client, futures, progress, no_workers_timeout)
        except BaseException:
            client.cancel(list(futures))
            raise
    return merge_replays(parts)


def _gather(client: Any, futures: dict[Any, str], progress: Callable[[int, int], None] | None,
            no_workers_timeout: float) -> list[Replay]:
    """Every host's Replay in host order, or `TracekitError` when the cluster cannot finish."""
    from distributed import wait
    from distributed.client import FutureCancelledError
    from distributed.comm.core import CommClosedError
    from distributed.scheduler import KilledWorker

    pending, done = set(futures), 0
    alone_since: float | None = None
    try:
        while pending:
            try:
                finished, pending = wait(pending, timeout=_POLL_SECONDS,
                                         return_when="FIRST_COMPLETED")
            except TimeoutError:  # nothing finished in this while
                finished = set()
            for future in finished:
                if future.status != "finished":
                    future.result()  # raises the worker's exception here
                done += 1
                if progress is not None:
                    progress(done, len(futures))
            if finished or client.scheduler_info().get("workers"):
                alone_since = None
            elif alone_since is None:
                alone_since = time.monotonic()
            elif time.monotonic() - alone_since > no_workers_timeout:
                raise TracekitError(f"replay on Dask failed: no worker left for "
                                    f"{no_workers_timeout:g} s with {len(pending)} host(s) to "
                                    "replay; nothing was merged")
        return client.gather(list(futures))
    except KilledWorker as error:
        host = futures.get(_future_of(futures, error.task), "?")
        raise TracekitError(f"replay on Dask failed: each of the {error.allowed_failures + 1} "
                            f"worker(s) replaying host {host} died, and Dask gave up on it "
                            "(distributed.scheduler.allowed-failures); nothing was merged") from None
    except FutureCancelledError as error:
        raise TracekitError(f"replay on Dask failed: the cluster cancelled a host's replay "
                            f"({error}); nothing was merged") from None
    except (CommClosedError, OSError) as error:
        raise TracekitError(f"replay on Dask failed: lost the Dask scheduler "
                            f"({type(error).__name__}: {error}); nothing was merged") from None


def _future_of(futures: dict[Any, str], key: Any) -> Any:
    return next((future for future in futures if future.key == key), None)


_POLL_SECONDS = 2.0
