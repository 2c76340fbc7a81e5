"""What a command leaves for its process's exit instead of freeing it.

A replay's model state (sockets, groups, queues, routes: over a million objects for a 600-host
fleet) holds reference cycles (a socket and its group point at each other), so it dies as cyclic
garbage: Python's collector would walk all of it in its next full collection, in the middle of
writing the report (over a second of CPU for the 600-host fleet). A command that ends after its
report does not need that memory back: `leave_for_exit` moves every object there is into the
collector's permanent generation (`gc.freeze()`), which no collection walks; the operating
system takes the memory back at exit. Objects made afterwards are collected as usual.

Only in processes that end with their command (`ends_with_command`): the `tracekit` command
itself (its entry point, `tracekit.cli.run`, says so: `command_process`), and the workers of a
cluster that serves one replay (`tracekit.replay.distributed.local_cluster(one_replay=True)`,
what `--dask local` starts, marks them with `ENDS_WITH_COMMAND`), whose dead states of earlier
tasks each later full collection would walk again. Elsewhere (a notebook, the commands run
in-process by a test, a worker of someone else's cluster) it does nothing: the collector frees
the state.
"""

from __future__ import annotations

import gc
import sys

__all__ = ["ENDS_WITH_COMMAND", "command_process", "ends_with_command", "leave_for_exit"]

ENDS_WITH_COMMAND = "tracekit.worker-ends-with-command"
"""The Dask configuration key that says a worker process ends with the command that started its
cluster (`tracekit.replay.distributed.local_cluster`)."""

_command = False


def command_process() -> None:
    """Say that this process ends with the command it runs (the command's entry point)."""
    global _command
    _command = True


def ends_with_command() -> bool:
    """Whether this process ends with its command: the command's own, or a worker so marked."""
    if _command:
        return True
    dask = sys.modules.get("dask")  # (a worker has imported it; a plain process need not)
    return dask is not None and bool(dask.config.get(ENDS_WITH_COMMAND, False))


def leave_for_exit() -> None:
    """In a process that ends with its command, every object there is now, garbage included,
    left for the process's exit; elsewhere nothing."""
    if ends_with_command():
        gc.freeze()
