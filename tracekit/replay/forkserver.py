"""The fork server `--dask local` forks its workers from, started as early as possible.

`tracekit.replay.localcluster.local_cluster` forks its workers from a multiprocessing fork server
that imported tracekit (and with it pandas, pyarrow and distributed) once. Those imports take
the server about two seconds. Started by the CLI before its own imports (`start`), the server
imports them on the other CPU while the client imports the same modules and reads the trace's
layout, instead of after it: the workers are ready that much sooner.

This module imports nothing heavy, so starting the server costs the client next to nothing.
"""

from __future__ import annotations

import multiprocessing

__all__ = ["PRELOAD", "start"]

PRELOAD = ["distributed", "tracekit.replay.distributed", "scipy.special"]
"""What the fork server imports before it forks a worker: `scipy.special` too, which the
summary's balance figures need wherever a group's p-value is not certainly 0
(`tracekit.replay.balance`), else every worker imports it for itself."""


def start() -> None:
    """Start the fork server (if it is not running) with `PRELOAD` as its imports. Returns
    at once: the server imports them in its own process."""
    from multiprocessing import forkserver

    multiprocessing.get_context("forkserver").set_forkserver_preload(PRELOAD)
    forkserver.ensure_running()
