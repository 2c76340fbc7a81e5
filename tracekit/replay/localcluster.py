"""The Dask cluster ``--dask local`` replays on: worker processes on this machine.

`local_cluster` starts one single-threaded worker process per CPU, forked from a fork server
that imported tracekit (`tracekit.replay.forkserver`), without the workers' statistical profiler
and with Dask's periodic housekeeping slowed (`LOCAL_WORKER_CONFIG`). `LocalClusterStart` starts
it in a thread, so the command goes on with its own imports while the workers start.

This module imports neither Dask nor tracekit's replay until a cluster is started.
"""

from __future__ import annotations

import os
import threading
from typing import Any

__all__ = ["LOCAL_WORKER_CONFIG", "local_cluster", "LocalClusterStart"]

LOCAL_WORKER_CONFIG = {
    "distributed.worker.multiprocessing-method": "forkserver",
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "1s",
    "distributed.worker.memory.monitor-interval": "1s",
    "distributed.admin.system-monitor.interval": "2s",
}
"""The Dask configuration `local_cluster` starts its scheduler, nannies and workers with.

- The fork server (`tracekit.replay.forkserver`).
- No statistical profiler: it walks the replay's stack every 10 ms from the worker's event
  loop (about 10% more CPU, and a GIL handoff each time).
- Housekeeping less often: the event loop's tick and the nanny's memory monitor once a second
  (not every 20 ms and 100 ms), the system monitor's samples of CPU, memory and network (for
  dashboards and the scheduler's statistics) every 2 s (not 500 ms). An idle 2-worker cluster
  took 0.79 s of CPU per 10 s with Dask's defaults, 0.14 s with these: CPU the replay's tasks
  need on a machine the workers fill.

For workers started otherwise, ``DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED=False`` in their
environment turns the profiler off, and ``--preload tracekit.replay.distributed`` imports
tracekit before the first task."""


def local_cluster(workers: int | None = None) -> Any:
    """A LocalCluster for replays on this machine: `workers` (default one per CPU) single-threaded
    worker processes forked from a fork server that imported tracekit, with
    `LOCAL_WORKER_CONFIG`, no dashboard. Use it as a context manager.

    Its workers let the collector free each task's dead model state: leaving it to their exit
    (`tracekit.teardown`, as the command does) measured slower, 12.4-12.9 s against 11.2-11.4 s
    for the 600-host fleet, since each later task then walks its young state once and allocates
    fresh memory instead of reusing the freed."""
    import dask
    from distributed import LocalCluster
    from distributed.utils import get_mp_context

    from tracekit.replay import forkserver

    with dask.config.set(LOCAL_WORKER_CONFIG):
        get_mp_context()  # distributed names its fork server's imports once; ours replace them
        forkserver.start()  # (a no-op when the CLI started it already)
        return LocalCluster(n_workers=workers or os.cpu_count() or 1, threads_per_worker=1,
                            processes=True, dashboard_address=None)


class LocalClusterStart:
    """`local_cluster` (one worker per CPU) starting in a thread from now on, for a replay that
    begins later: ``--dask local`` goes on importing tracekit's replay and report and reading
    the trace's layout meanwhile, and its workers are up about 0.3 s sooner.

    `replay_on_dask` takes it as its client and closes the cluster when it ends; `close` (or
    leaving it as a context manager) closes it otherwise. An error starting the cluster is
    raised by `cluster`."""

    def __init__(self, workers: int | None = None) -> None:
        # Dask imported here, in the caller's thread: the thread then imports little that the
        # caller's own imports meanwhile could import too (two threads importing modules that
        # import each other can see each other's half-initialised modules)
        import dask  # noqa: F401
        import distributed  # noqa: F401

        self._cluster: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._start, args=(workers,), daemon=True,
                                        name="tracekit: starting the local Dask cluster")
        self._thread.start()

    def _start(self, workers: int | None) -> None:
        try:
            self._cluster = local_cluster(workers)
        except BaseException as error:  # raised in the caller's thread, by `cluster`
            self._error = error

    def cluster(self) -> Any:
        """The LocalCluster, once it is up (waits for it)."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._cluster

    def close(self) -> None:
        """Close the cluster (after it has come up, if it is still starting)."""
        self._thread.join()
        cluster, self._cluster = self._cluster, None
        if cluster is not None:
            cluster.close()

    def __enter__(self) -> LocalClusterStart:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
