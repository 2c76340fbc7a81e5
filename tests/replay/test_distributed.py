"""Replay on a real Dask cluster gives exactly what a single-process replay gives."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)
import pytest

from tracekit.simulator.api import simulate
from tracekit.replay.api import replay
from tracekit.replay.distributed import local_cluster, merge_replays, replay_on_dask
from tracekit.report.json import summary_json
from tracekit.trace import iter_batches, read_metadata, trace_hosts, write_trace

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def cluster_client():
    with local_cluster(2) as cluster, distributed.Client(cluster) as client:
        yield client


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """A three-host simulated trace with injected faults, as one file and as host= directories."""
    root = tmp_path_factory.mktemp("fleet")
    single = simulate("rolling-restart", events=15_000, seed=5, hosts=3, inject_faults=0.01,
                      output=root / "fleet.parquet")
    metadata = {k: v for k, v in read_metadata(single).items()
                if k not in ("tracekit.format", "tracekit.source", "tracekit.sorted_by")}
    partitioned = write_trace(root / "fleet-dir", iter_batches(single), metadata,
                              source="simulate", partition_by_host=True)
    return single, partitioned


def test_trace_hosts_lists_every_host_of_a_file_and_a_directory(fleet):
    single, partitioned = fleet
    assert trace_hosts(single) == trace_hosts(partitioned) == ["sim-00", "sim-01", "sim-02"]


@pytest.mark.parametrize("layout", ["file", "directory"])
def test_dask_replay_is_byte_identical_to_the_single_process_replay(fleet, cluster_client, layout):
    path = fleet[0] if layout == "file" else fleet[1]
    local = replay(path, results=True)
    spread = replay_on_dask(path, cluster_client, results=True)
    assert local.summary["mismatched"] > 0  # the injected faults are there to be found
    assert summary_json(spread.summary) == summary_json(local.summary)
    assert spread.decisions.equals(local.decisions)
    assert len(local.timeline()) and spread.timeline().equals(local.timeline())
    assert [b.num_rows for b in spread.results] and sum(b.num_rows for b in spread.results) == \
        local.summary["decisions"]


def test_local_workers_start_with_tracekit_imported_and_without_the_profiler(fleet, cluster_client):
    # builtins travel by name, so asking a worker imports nothing there: a spawned worker that
    # never ran a task would not hold tracekit yet; one from the fork server has it preloaded
    asked = "('tracekit.replay.api' in __import__('sys').modules, " \
            "__import__('dask').config.get('distributed.worker.profile.enabled'), " \
            "__import__('dask').config.get('distributed.admin.tick.interval'), " \
            "__import__('dask').config.get('distributed.worker.memory.monitor-interval'))"
    assert set(cluster_client.run(eval, asked).values()) == {(True, False, "1s", "1s")}
    single, _ = fleet
    local = replay(single, results=True)
    spread = replay_on_dask(single, "local", results=True)
    assert summary_json(spread.summary) == summary_json(local.summary)
    assert spread.decisions.equals(local.decisions)


def test_profile_fit_is_fitted_once_over_all_hosts(fleet, cluster_client):
    single, _ = fleet
    local = replay(single, profile="fit")
    spread = replay_on_dask(single, cluster_client, profile="fit", tasks=3)
    assert local.summary["profile"]["chosen_by"].startswith("best fit (mismatches per profile")
    assert summary_json(spread.summary) == summary_json(local.summary)


def test_each_task_replays_only_its_host(fleet):
    single, _ = fleet
    parts = [replay(single, hosts=[h]) for h in trace_hosts(single)]
    assert [list(p.summary["hosts"]) for p in parts] == [["sim-00"], ["sim-01"], ["sim-02"]]
    assert summary_json(merge_replays(parts).summary) == summary_json(replay(single).summary)


def test_a_worker_error_reaches_the_caller(tmp_path, cluster_client):
    from tracekit.errors import TracekitError

    path = simulate("steady", events=2_000, seed=1, hosts=2, output=tmp_path / "t.parquet")
    with pytest.raises(TracekitError, match="unknown kernel profile"):
        replay_on_dask(path, cluster_client, profile="9.99")


@pytest.fixture(scope="module")
def recorded_fleet(tmp_path_factory):
    """Twelve hosts of real-kernel recordings (the fleet benchmark's data), written in small row
    groups of whole hosts so that tasks of a few hosts read a few row groups each."""
    import importlib.util
    import sys
    from pathlib import Path

    import tracekit.trace.write as write

    script = Path(__file__).resolve().parents[2] / "benchmarks" / "fleet_trace.py"
    spec = importlib.util.spec_from_file_location("fleet_trace", script)
    module = sys.modules.setdefault("fleet_trace", importlib.util.module_from_spec(spec))
    spec.loader.exec_module(module)
    saved, write.HOST_GROUP_ROWS = write.HOST_GROUP_ROWS, 3_000
    try:
        return module.write_fleet(tmp_path_factory.mktemp("recorded-fleet"), hosts=12).parquet
    finally:
        write.HOST_GROUP_ROWS = saved


@pytest.mark.slow
@pytest.mark.parametrize("tasks", [2, 5, 12])
def test_tasks_of_several_hosts_merge_byte_identical(recorded_fleet, cluster_client, tasks):
    local = replay(recorded_fleet, results=True)
    spread = replay_on_dask(recorded_fleet, cluster_client, results=True, tasks=tasks)
    assert local.summary["decisions"] > 8_000 and local.summary["mismatched"] == 0
    assert summary_json(spread.summary) == summary_json(local.summary)
    assert spread.decisions.equals(local.decisions)
    assert len(local.timeline()) and spread.timeline().equals(local.timeline())
    assert pa.Table.from_batches(spread.results).equals(pa.Table.from_batches(local.results))


def test_plan_cuts_whole_units_of_similar_rows():
    from tracekit.replay.distributed import plan_tasks
    from tracekit.trace.layout import HostRows

    hosts = [HostRows(f"h{i:02d}", 100 + i, unit=i // 3) for i in range(12)]  # 4 units of 3 hosts
    runs = plan_tasks(hosts, 4)
    assert [h for run in runs for h in run] == [h.host for h in hosts]
    assert [len(run) for run in runs] == [3, 3, 3, 3]
    assert plan_tasks(hosts, 2) == [[h.host for h in hosts[:6]], [h.host for h in hosts[6:]]]
    one_group = [HostRows(h.host, h.rows, unit=0) for h in hosts]  # a file in one big row group
    assert [len(run) for run in plan_tasks(one_group, 4)] == [3, 3, 3, 3]
    assert plan_tasks(hosts, 100) == [[h.host] for h in hosts]


def test_shares_shrink_for_workers_and_plans_follow_them():
    from tracekit.replay.distributed import plan_tasks, shares
    from tracekit.trace.layout import HostRows

    assert shares(4) == [0.25] * 4 and shares(2, 2) == [0.5, 0.5] and shares(3, 8) == [1 / 3] * 3
    for tasks, workers in ((16, 2), (12, 3), (5, 2), (32, 4)):
        share = shares(tasks, workers)
        assert sum(share) == pytest.approx(1)
        assert share == sorted(share, reverse=True) and share[0] > share[-1]
        # each worker's first round is a share the others match: tasks of one round are equal
        assert len(set(share[:workers])) == 1
    # the fleet benchmark's layout: 600 hosts in 15 row groups; 16 tasks for 2 workers
    hosts = [HostRows(f"h{i:03d}", 1_600, unit=i // 40) for i in range(600)]
    runs = plan_tasks(hosts, 16, workers=2)
    sizes = [len(run) for run in runs]
    assert [h for run in runs for h in run] == [h.host for h in hosts]
    assert len(runs) == 16 and sizes == sorted(sizes, reverse=True)
    assert sizes[-1] * 4 < sizes[0] and sizes[-1] <= 16  # the last round is small


def test_plan_balances_the_workers_before_it_spares_a_read():
    from tracekit.replay.distributed import MIN_TASK_ROWS, plan_tasks, task_count
    from tracekit.trace.layout import HostRows

    # the fleet benchmark's layout: 600 hosts in 15 row groups, in 16 equal tasks
    hosts = [HostRows(f"h{i:03d}", 1_600, unit=i // 40) for i in range(600)]
    assert task_count(2, 600 * 1_600, 600) == 8  # 4 tasks per worker
    runs = plan_tasks(hosts, 16)
    assert len(runs) == 16 and {len(run) for run in runs} == {37, 38}
    assert [h for run in runs for h in run] == [h.host for h in hosts]
    assert task_count(2, 5 * MIN_TASK_ROWS, 60) == 4  # 3 tasks on one worker would take as long as 6
    assert task_count(4, 3 * MIN_TASK_ROWS, 60) == 3


def test_a_task_reads_only_the_row_groups_of_its_hosts(recorded_fleet):
    import pyarrow.parquet as pq

    from tracekit.trace.layout import host_rows
    from tracekit.trace.read import host_row_groups

    hosts = host_rows(recorded_fleet)
    parquet = pq.ParquetFile(recorded_fleet)
    assert parquet.metadata.num_row_groups > 4 and len({h.unit for h in hosts}) == parquet.metadata.num_row_groups
    wanted = [h.host for h in hosts if h.unit == 2]
    assert host_row_groups(parquet, wanted) == [2]
    whole = pa.Table.from_batches(list(iter_batches(recorded_fleet)))
    mine = pa.Table.from_batches(list(iter_batches(recorded_fleet, hosts=wanted)))
    expected = whole.filter(pa.compute.is_in(pa.compute.cast(whole["host"], pa.string()),
                                             value_set=pa.array(wanted)))
    assert mine.to_pylist() == expected.to_pylist() and mine.num_rows == sum(
        h.rows for h in hosts if h.unit == 2)


def test_host_rows_agree_between_a_file_and_host_directories(fleet):
    from tracekit.trace.layout import host_rows

    single, partitioned = fleet
    assert [(h.host, h.rows) for h in host_rows(single)] == [(h.host, h.rows) for h in host_rows(partitioned)]
    assert [h.unit for h in host_rows(partitioned)] == [0, 1, 2]


def test_a_cluster_started_early_replays_the_same_and_is_closed_after(fleet):
    from distributed.core import Status

    from tracekit.replay.localcluster import LocalClusterStart

    single, _ = fleet
    starting = LocalClusterStart(2)
    cluster = starting.cluster()
    assert cluster.status == Status.running and len(cluster.workers) == 2
    spread = replay_on_dask(single, starting, results=True)
    assert cluster.status == Status.closed  # the replay closed what it was given
    local = replay(single, results=True)
    assert summary_json(spread.summary) == summary_json(local.summary)
    assert spread.decisions.equals(local.decisions)
    starting.close()  # a second close does nothing


def test_a_cluster_started_early_is_closed_when_the_replay_fails(tmp_path):
    from distributed.core import Status

    from tracekit.errors import TracekitError
    from tracekit.replay.localcluster import LocalClusterStart

    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"not parquet at all")
    starting = LocalClusterStart(1)
    with pytest.raises(TracekitError, match="garbage.parquet"):
        replay_on_dask(garbage, starting)
    assert starting.cluster() is None or starting.cluster().status == Status.closed


def test_the_command_on_dask_local_writes_the_single_process_summary(fleet, tmp_path):
    from click.testing import CliRunner

    from tracekit.cli import main

    single, _ = fleet
    outs = {}
    for name, extra in (("single", []), ("dask", ["--dask", "local"])):
        outs[name] = tmp_path / f"{name}.json"
        run = CliRunner().invoke(main, ["replay", str(single), "--json", str(outs[name]), *extra])
        assert run.exit_code == 1, run.output  # the injected faults are mismatches
        assert "mismatch" in run.output
    assert outs["dask"].read_bytes() == outs["single"].read_bytes()
    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"not parquet at all")
    run = CliRunner().invoke(main, ["replay", str(garbage), "--dask", "local"])
    assert run.exit_code == 2 and "garbage.parquet" in run.output
