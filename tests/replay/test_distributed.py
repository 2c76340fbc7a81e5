"""Replay on a real Dask cluster gives exactly what a single-process replay gives."""

from __future__ import annotations

import pytest

from tracekit.capture.simulate import simulate
from tracekit.replay.api import replay
from tracekit.replay.distributed import merge_replays, replay_on_dask
from tracekit.report.json import summary_json
from tracekit.trace import iter_batches, read_metadata, trace_hosts, write_trace

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def cluster_client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        with distributed.Client(cluster) as client:
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
    assert [b.num_rows for b in spread.results] and sum(b.num_rows for b in spread.results) == \
        local.summary["decisions"]


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
