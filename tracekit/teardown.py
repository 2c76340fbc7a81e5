"""What a command leaves for its process's exit instead of freeing it.

A replay's model state (sockets, groups, queues, routes: over a million objects for a 600-host
fleet) holds reference cycles (a socket and its group point at each other), so it dies as cyclic
garbage: Python's collector would walk all of it in its next full collection, in the middle of
writing the report (over a second of CPU for the 600-host fleet). A command that ends
after its report does not need that memory back: `leave_for_exit` moves every object there is
into the collector's permanent generation (`gc.freeze()`), which no collection walks; the
operating system takes the memory back at exit. Objects made afterwards are collected as usual.
Only for processes that end with their command: the CLI, and the workers of `--dask local`
(`tracekit.replay.distributed.local_cluster` marks them: `ENDS_WITH_COMMAND`), whose dead
states of earlier tasks each later full collection would walk again. A long-lived process (a
notebook, a worker of someone else's cluster) lets the collector free the state.
"""

from __future__ import annotations

import gc

__all__ = ["ENDS_WITH_COMMAND", "leave_for_exit", "ends_with_command"]

ENDS_WITH_COMMAND = "tracekit.worker-ends-with-command"
"""The Dask configuration key that says a worker process ends with the command that started its
cluster (`tracekit.replay.distributed.LOCAL_WORKER_CONFIG`)."""


def leave_for_exit() -> None:
    """Every object there is now, garbage included, left for the process's exit."""
    gc.freeze()


def ends_with_command() -> bool:
    """Whether this process is a worker that ends with its command (`ENDS_WITH_COMMAND`)."""
    import dask

    return bool(dask.config.get(ENDS_WITH_COMMAND, False))
