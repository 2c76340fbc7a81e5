"""The simulator: valid traces of every workload, deterministic, the bulk path equal to the
faithful one, and faults injected exactly where it says."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from tracekit.simulator.api import FAULTS_IN_METADATA, injected_faults, simulate
from tracekit.simulator.workloads import WORKLOADS
from tracekit.simulator.workloads.host import Port, SimHost
from tracekit.errors import TracekitError
from tracekit.kernel.profiles import NEWEST
from tracekit.trace import read_metadata, read_trace, validate_trace

EVENTS = 20_000


@pytest.fixture(scope="module")
def traces(tmp_path_factory):
    """One two-host trace of every workload."""
    directory = tmp_path_factory.mktemp("simulated")
    return {name: simulate(name, events=EVENTS, seed=7, output=directory / f"{name}.parquet",
                           hosts=2)
            for name in WORKLOADS}


@pytest.mark.parametrize("workload", list(WORKLOADS))
def test_every_workload_writes_a_valid_trace_of_exactly_the_events_asked(traces, workload):
    summary = validate_trace(traces[workload])
    assert summary.rows == EVENTS
    assert [(h.host, h.rows, h.first_seq, h.last_seq) for h in summary.hosts] == [
        ("sim-00", EVENTS // 2, 0, EVENTS // 2 - 1), ("sim-01", EVENTS // 2, 0, EVENTS // 2 - 1)]
    metadata = read_metadata(traces[workload])
    assert metadata["tracekit.source"] == "simulate"
    assert metadata["tracekit.workload"] == workload
    assert metadata["tracekit.seed"] == "7"
    assert "tracekit.kernel" not in metadata


@pytest.mark.parametrize("workload", list(WORKLOADS))
def test_every_workload_is_selection_dominated_yet_changes_what_it_says(traces, workload):
    events = dict(validate_trace(traces[workload]).events)
    assert events["reuseport_select_sock"] > EVENTS * 0.8
    expected_changes = {
        "rolling-restart": {"reuseport_migrate_sock", "reuseport_stop_listen_sock", "sysctl"},
        "scale": {"reuseport_detach_sock", "reuseport_stop_listen_sock"},
        "udp-connected": {"reuseport_has_conns_set", "reuseport_detach_sock"},
        "cbpf": {"reuseport_attach_prog", "reuseport_detach_prog"},
        "mutation-heavy": {"reuseport_migrate_sock", "reuseport_update_incoming_cpu"},
    }.get(workload, set())
    assert expected_changes <= events.keys()


def test_mutation_heavy_changes_a_group_every_100_events(traces):
    table = pq.read_table(traces["mutation-heavy"], columns=["host", "seq", "event"])
    table = table.filter(pc.equal(table["host"].cast("string"), "sim-00"))
    events = np.array(table["event"].cast("string").to_pylist())
    seqs = table["seq"].to_numpy()
    changes = seqs[(events != "reuseport_select_sock")]
    periods = np.unique(changes // 100)
    assert len(periods) == EVENTS // 2 // 100  # at least one change in every block of 100


def test_scale_grows_a_group_past_the_initial_array(tmp_path):
    path = simulate("scale", events=EVENTS, seed=1, output=tmp_path / "s.parquet")
    frame = read_trace(path)
    joins = frame[frame.event.isin(["reuseport_alloc", "reuseport_add_sock"])].shape[0]
    leaves = frame[frame.event.isin(["reuseport_detach_sock", "reuseport_stop_listen_sock"])]
    assert joins > 128 and leaves.shape[0] > 128


def test_udp_connected_has_selections_that_find_no_socket(traces):
    frame = read_trace(traces["udp-connected"])
    selections = frame[frame.event == "reuseport_select_sock"]
    assert (selections.observed == -1).any() and (selections.observed >= 0).mean() > 0.5


@pytest.mark.parametrize("workload", list(WORKLOADS))
def test_bulk_selection_gives_the_faithful_paths_bytes(tmp_path, workload):
    bulk = simulate(workload, events=EVENTS, seed=11, output=tmp_path / "bulk.parquet", hosts=2)
    one_by_one = simulate(workload, events=EVENTS, seed=11, output=tmp_path / "faithful.parquet",
                          hosts=2, bulk=False)
    assert bulk.read_bytes() == one_by_one.read_bytes()


def test_same_arguments_same_bytes(tmp_path):
    first = simulate("mutation-heavy", events=5_000, seed=3, output=tmp_path / "a.parquet",
                     hosts=3, inject_faults=0.01)
    second = simulate("mutation-heavy", events=5_000, seed=3, output=tmp_path / "b.parquet",
                      hosts=3, inject_faults=0.01)
    assert first.read_bytes() == second.read_bytes()
    other_seed = simulate("mutation-heavy", events=5_000, seed=4, output=tmp_path / "c.parquet",
                          hosts=3, inject_faults=0.01)
    assert other_seed.read_bytes() != first.read_bytes()


def test_kernel_option_picks_the_older_profile_and_records_it(tmp_path):
    old = simulate("steady", events=5_000, seed=2, output=tmp_path / "old.parquet",
                   kernel="5.15.0-91-generic")
    new = simulate("steady", events=5_000, seed=2, output=tmp_path / "new.parquet")
    assert read_metadata(old)["tracekit.kernel"] == "5.15.0-91-generic"
    observed_old = read_trace(old).observed.to_numpy()
    observed_new = read_trace(new).observed.to_numpy()
    # steady pins one port's workers to CPUs: only profiles from 6.2 on honour SO_INCOMING_CPU.
    assert (observed_old != observed_new).any()


@pytest.mark.parametrize("workload", list(WORKLOADS))
def test_faults_move_only_the_listed_observations(tmp_path, workload):
    clean = read_trace(simulate(workload, events=EVENTS, seed=5, output=tmp_path / "clean.parquet",
                                hosts=2))
    path = simulate(workload, events=EVENTS, seed=5, output=tmp_path / "faulty.parquet", hosts=2,
                    inject_faults=0.02)
    faulty = read_trace(path)
    faults = injected_faults(path).to_pandas()
    assert 0.01 * EVENTS < len(faults) < 0.03 * EVENTS
    changed = faulty[(faulty.observed != clean.observed)]
    assert sorted(zip(changed.host, changed.seq)) == sorted(zip(faults.host, faults.seq))
    assert (changed.event == "reuseport_select_sock").all()
    moved = faults.merge(clean[["host", "seq", "observed"]], on=["host", "seq"])
    assert (moved.expected == moved.observed_y).all()
    assert (moved.observed_x != moved.observed_y).all()
    assert faulty.drop(columns="observed").equals(clean.drop(columns="observed"))


def test_a_fault_moves_to_another_live_member_never_out_of_the_group(tmp_path):
    path = simulate("steady", events=5_000, seed=5, output=tmp_path / "t.parquet",
                    inject_faults=0.1)
    frame = read_trace(path)
    faults = injected_faults(path).to_pandas()
    members = set(frame.loc[frame.event.isin(["reuseport_alloc", "reuseport_add_sock"]), "sk"])
    assert set(faults.observed) <= members


def test_few_faults_are_listed_in_the_metadata(tmp_path):
    path = simulate("steady", events=10_000, seed=1, output=tmp_path / "t.parquet",
                    inject_faults=0.01)
    listed = json.loads(read_metadata(path)["tracekit.simulate.faults"])
    assert list(listed) == ["sim-00"] and len(listed["sim-00"]) == injected_faults(path).num_rows
    assert not (tmp_path / "t.parquet.faults.parquet").exists()


def test_many_faults_go_to_a_sidecar_file_which_a_clean_rerun_removes(tmp_path):
    events = 10_000
    rate = 2 * FAULTS_IN_METADATA / events
    path = simulate("steady", events=events, seed=1, output=tmp_path / "t.parquet",
                    inject_faults=rate)
    sidecar = tmp_path / "t.parquet.faults.parquet"
    metadata = read_metadata(path)
    assert metadata["tracekit.simulate.faults_file"] == sidecar.name
    assert "tracekit.simulate.faults" not in metadata
    assert pq.read_table(sidecar).num_rows == injected_faults(path).num_rows > FAULTS_IN_METADATA
    simulate("steady", events=events, seed=1, output=path)
    assert not sidecar.exists() and injected_faults(path).num_rows == 0


def test_groups_of_one_get_no_fault_and_every_other_row_can():
    host = SimHost("h", profile=NEWEST, events=1_000, seed=0, index=0, fault_rate=1.0)
    alone, pair = Port("udp"), Port("tcp")
    host.open(alone)
    host.open(pair)
    host.open(pair)
    host.select([alone, pair], 500)
    batch = host.rows.take()
    selects = batch.filter(pc.equal(batch["event"].cast("string"), "reuseport_select_sock"))
    members = {sk.sk_id for sk in pair.members}
    in_pair = np.isin(selects["sk"].to_numpy(), list(members))
    faults = np.concatenate(host.faults)
    assert len(faults) == in_pair.sum() > 0
    assert set(faults[:, 2]) <= members and (faults[:, 1] != faults[:, 2]).all()


@pytest.mark.parametrize("kwargs, message", [
    ({"workload": "nope"}, "unknown workload 'nope'; choose one of steady"),
    ({"events": 0}, "--events must be at least 1"),
    ({"inject_faults": 1.5}, "--inject-faults is a fraction between 0 and 1"),
    ({"hosts": 0}, "--hosts must be between 1"),
    ({"seed": -1}, "--seed must be a non-negative integer"),
])
def test_bad_arguments_are_refused_with_a_message(tmp_path, kwargs, message):
    arguments = {"workload": "steady", "events": 10, "seed": 0, "output": tmp_path / "t.parquet"}
    arguments.update(kwargs)
    with pytest.raises(TracekitError, match=message):
        simulate(arguments.pop("workload"), **arguments)
    assert not (tmp_path / "t.parquet").exists()


def test_injected_faults_refuses_a_trace_that_was_not_simulated(tmp_path):
    from tracekit.trace import write_trace

    path = write_trace(tmp_path / "r.parquet", [{"host": "h", "seq": 0, "event": "sysctl",
                                                "name": "x", "value": 1}], source="record")
    with pytest.raises(TracekitError, match="not a simulated trace"):
        injected_faults(path)


def test_progress_reports_every_row_once_per_pass(tmp_path):
    """The CLI's progress bar is fed by `progress(done, total)`: it must end at the total."""
    calls = []
    simulate("steady", events=3_000, seed=1, output=tmp_path / "a.parquet",
             progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (3_000, 3_000) and [d for d, _ in calls] == sorted(d for d, _ in calls)
    calls.clear()
    simulate("steady", events=3_000, seed=1, inject_faults=0.01, output=tmp_path / "b.parquet",
             progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (6_000, 6_000)  # faults listed in the metadata: two passes
