"""What a command leaves for its process's exit instead of freeing it.

A replay's model state (sockets, groups, queues, routes: over a million objects for a 600-host
fleet) holds reference cycles (a socket and its group point at each other), so it dies as cyclic
garbage: Python's collector would walk all of it in its next full collection, in the middle of
writing the report (over a second of CPU for the 600-host fleet). A command that ends after its
report does not need that memory back: `leave_for_exit` moves every object there is into the
collector's permanent generation (`gc.freeze()`), which no collection walks; the operating
system takes the memory back at exit. Objects made afterwards are collected as usual.

Only in a process that ends with its command (`ends_with_command`): the `tracekit` command
itself, whose entry point (`tracekit.cli.run`) says so (`command_process`). Elsewhere (a
notebook, the commands a test runs in-process, a Dask worker) it does nothing: the collector
frees the state. (`--dask local`'s workers were tried with it and ran slower: see
`tracekit.replay.localcluster.local_cluster`.)
"""

from __future__ import annotations

import gc

__all__ = ["command_process", "ends_with_command", "leave_for_exit"]

_command = False


def command_process() -> None:
    """Say that this process ends with the command it runs (the command's entry point)."""
    global _command
    _command = True


def ends_with_command() -> bool:
    """Whether this process ends with its command (`command_process`)."""
    return _command


def leave_for_exit() -> None:
    """In a process that ends with its command, every object there is now, garbage included,
    left for the process's exit; elsewhere nothing."""
    if ends_with_command():
        gc.freeze()
