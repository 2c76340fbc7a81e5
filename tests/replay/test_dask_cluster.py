"""Replay on a real Dask cluster: a scheduler and two workers started as separate processes on
loopback (`dask scheduler`, `dask worker`), as an operator would; then one worker killed in the
middle of the replay. The replay completes with the single-process result, byte for byte, or
fails with a clear message; it never returns a partial result. Each test is bounded in time: a
watchdog kills the cluster, which makes a hung replay fail."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import tracekit
from tracekit.simulator.api import simulate
from tracekit.errors import TracekitError
from tracekit.replay.api import replay
from tracekit.replay.distributed import replay_on_dask
from tracekit.report.json import summary_json

distributed = pytest.importorskip("distributed")
pytestmark = pytest.mark.slow

DASK = shutil.which("dask") or str(Path(sys.executable).with_name("dask"))
BOUND_SECONDS = 300
HOSTS = 6


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """`dask scheduler` and `dask worker` processes on loopback, each in a session of its own."""

    def __init__(self, logs: Path, allowed_failures: int | None = None) -> None:
        self.logs = logs
        self.env = dict(os.environ)
        self.env["PYTHONPATH"] = os.pathsep.join(
            [str(Path(tracekit.__file__).parents[1])] + [p for p in [os.environ.get("PYTHONPATH")] if p])
        if allowed_failures is not None:
            self.env["DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES"] = str(allowed_failures)
        self.address = f"tcp://127.0.0.1:{_free_port()}"
        self.procs: dict[str, subprocess.Popen] = {}
        port = self.address.rsplit(":", 1)[1]
        self._start("scheduler", [DASK, "scheduler", "--host", "127.0.0.1", "--port", port,
                                  "--no-dashboard"])
        for name in ("worker-a", "worker-b"):
            self._start(name, [DASK, "worker", self.address, "--name", name, "--nthreads", "1",
                               "--no-nanny", "--no-dashboard", "--death-timeout", "60"])
        self.client = distributed.Client(self.address, timeout=60)
        self.client.wait_for_workers(2, timeout=120)
        self.pids = self.client.run(os.getpid)  # worker address -> pid

    def _start(self, name: str, argv: list[str]) -> None:
        log = open(self.logs / f"{name}.log", "wb")
        self.procs[name] = subprocess.Popen(argv, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)

    def kill_worker(self, address: str) -> None:
        os.kill(self.pids[address], signal.SIGKILL)

    def stop(self) -> None:
        try:
            self.client.close(timeout=10)
        except Exception:
            pass
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=30)


@pytest.fixture
def start_cluster(tmp_path):
    """Start a cluster (`allowed_failures`: the scheduler's `allowed-failures`); stopped after the
    test, or by the watchdog when the test runs past its bound."""
    started = []

    def start(allowed_failures: int | None = None) -> Cluster:
        c = Cluster(tmp_path, allowed_failures)
        watchdog = threading.Timer(BOUND_SECONDS, c.stop)
        watchdog.daemon = True
        watchdog.start()
        started.append((c, watchdog))
        return c

    yield start
    for c, watchdog in started:
        watchdog.cancel()
        c.stop()


@pytest.fixture
def cluster(start_cluster):
    return start_cluster()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    path = tmp_path_factory.mktemp("fleet") / "fleet.parquet"
    return simulate("rolling-restart", events=300_000, seed=7, hosts=HOSTS, inject_faults=0.001,
                    output=path)


@pytest.fixture(scope="module")
def single(fleet):
    return replay(fleet, results=True)


class KillBusyWorkers:
    """A progress hook: once the first host is done, SIGKILL `count` workers that are replaying a
    host at that moment (waiting for the next progress call when none is)."""

    def __init__(self, cluster: Cluster, count: int) -> None:
        self.cluster, self.count = cluster, count
        self.killed: list[tuple[str, list]] = []

    def __call__(self, done: int, total: int) -> None:
        while len(self.killed) < self.count:
            busy = [(w, keys) for w, keys in sorted(self.cluster.client.processing().items())
                    if keys and w not in dict(self.killed)]
            if not busy:
                return
            worker, keys = busy[0]
            self.cluster.kill_worker(worker)
            self.killed.append((worker, list(keys)))


def test_a_real_cluster_replays_byte_identical_to_one_process(cluster, fleet, single):
    with distributed.get_task_stream(cluster.client) as tasks:
        spread = replay_on_dask(fleet, cluster.client, results=True)
    assert len({task["worker"] for task in tasks.data}) == 2  # both workers replayed hosts
    assert single.summary["mismatched"] > 0 and len(single.summary["hosts"]) == HOSTS
    assert summary_json(spread.summary) == summary_json(single.summary)
    assert spread.decisions.equals(single.decisions)


def test_a_worker_killed_in_the_middle_costs_time_not_the_result(cluster, fleet, single):
    kill = KillBusyWorkers(cluster, 1)
    spread = replay_on_dask(fleet, cluster.client, results=True, progress=kill)
    (worker, keys), = kill.killed
    assert keys  # it was replaying a host when it died
    assert worker not in cluster.client.scheduler_info()["workers"]
    assert summary_json(spread.summary) == summary_json(single.summary)
    assert spread.decisions.equals(single.decisions)


def test_a_task_dask_gives_up_on_is_a_clear_failure(start_cluster, fleet):
    cluster = start_cluster(allowed_failures=0)
    kill = KillBusyWorkers(cluster, 1)
    with pytest.raises(TracekitError) as caught:
        replay_on_dask(fleet, cluster.client, results=True, progress=kill)
    (_worker, keys), = kill.killed
    # a task's key names the first host of its run of hosts
    hosts = {h for h in (f"sim-{i:02d}" for i in range(HOSTS)) for key in keys if f"-{h}-" in str(key)}
    named = re.fullmatch(r"replay on Dask failed: each of the 1 worker\(s\) replaying (?:host (\S+)|hosts "
                         r"(\S+) to \S+) died, and Dask gave up on it \(distributed\.scheduler\."
                         r"allowed-failures\); nothing was merged", str(caught.value))
    assert named and (named.group(1) or named.group(2)) in hosts, (str(caught.value), hosts)


def test_no_worker_left_is_a_clear_failure_not_a_hang(cluster, fleet):
    # Both workers die before the replay starts, so the tasks can never run whatever the machine's
    # load (killing them in the middle raced the last task to the finish). Losing one in the middle
    # is the test above.
    for worker in list(cluster.pids):
        cluster.kill_worker(worker)
    deadline = time.monotonic() + 60
    while cluster.client.scheduler_info()["workers"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not cluster.client.scheduler_info()["workers"], "the scheduler still lists a killed worker"
    started = time.monotonic()
    with pytest.raises(TracekitError, match=r"no worker left for 5 s with \d+ host\(s\) to replay; "
                                            "nothing was merged"):
        replay_on_dask(fleet, cluster.client, no_workers_timeout=5)
    assert 5 <= time.monotonic() - started < BOUND_SECONDS
