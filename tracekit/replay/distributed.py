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
                   progress: Callable[[int, int], None] | None = None) -> Replay:
    """Replay every host of a trace as one Dask task each and merge the results.

    `client` is a `distributed.Client`, a scheduler address (``tcp://host:8786``), or ``"local"``
    for a LocalCluster on this machine. Workers must reach `trace_path` (a shared filesystem or
    the same machine). `progress(hosts_done, hosts_total)` is called as hosts finish.
    """
    try:
        from distributed import Client, LocalCluster, as_completed
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
        futures = [client.submit(_replay_host, path, host, profile, policies, results, explain_all,
                                 key=f"tracekit-replay-{host}-{i}", pure=False)
                   for i, host in enumerate(hosts)]
        done = 0
        for future in as_completed(futures):
            if future.status == "error":
                future.result()  # raises the worker's exception here
            done += 1
            if progress is not None:
                progress(done, len(hosts))
        parts = client.gather(futures)
    return merge_replays(parts)
