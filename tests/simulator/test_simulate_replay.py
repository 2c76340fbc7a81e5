"""Simulated traces through replay: no mismatch and no unknown, faults found exactly, and the bulk
selection path deciding what the faithful one decides."""

from __future__ import annotations

import json

import pytest

from tracekit.simulator.api import injected_faults, simulate
from tracekit.simulator.workloads import WORKLOADS
from tracekit.replay import engine
from tracekit.replay.api import replay

EVENTS = 10_000


@pytest.mark.parametrize("workload", list(WORKLOADS))
def test_a_simulated_trace_replays_with_no_mismatch_and_no_unknown(tmp_path, workload):
    path = simulate(workload, events=EVENTS, seed=21, output=tmp_path / "t.parquet", hosts=2)
    summary = replay(path).summary
    assert (summary["mismatched"], summary["unknown"]) == (0, 0)
    assert summary["matched"] == summary["decisions"] > EVENTS * 0.9
    assert summary["trace"]["source"] == "simulate"


@pytest.mark.parametrize("workload", list(WORKLOADS))
def test_replay_finds_exactly_the_injected_faults(tmp_path, workload):
    path = simulate(workload, events=EVENTS, seed=22, output=tmp_path / "t.parquet", hosts=2,
                    inject_faults=0.02)
    result = replay(path)
    faults = injected_faults(path).to_pandas()
    mismatches = result.decisions[result.decisions.verdict == "mismatch"]
    assert len(faults) > 0 and result.exit_code == 1
    assert sorted(zip(mismatches.host, mismatches.seq)) == sorted(zip(faults.host, faults.seq))
    by_row = faults.set_index(["host", "seq"])
    for row in mismatches.itertuples():
        assert (row.expected, row.observed) == tuple(by_row.loc[(row.host, row.seq),
                                                                ["expected", "observed"]])
        assert row.explanation
    assert result.summary["unknown"] == 0


@pytest.mark.parametrize("workload", list(WORKLOADS))
def test_the_engines_bulk_path_decides_what_the_faithful_path_decides(tmp_path, workload,
                                                                      monkeypatch):
    """Every column of every decision (explanations too) and the summary's bytes."""
    path = simulate(workload, events=6_000, seed=23, output=tmp_path / "t.parquet", hosts=2,
                    inject_faults=0.05)
    bulk = replay(path, results=True)
    monkeypatch.setattr(engine, "BULK", False)  # every selection through reuseport_select_sock
    faithful = replay(path, results=True)
    assert len(bulk.decisions) > 4_000 and bulk.summary["mismatched"] > 0
    assert bulk.decisions.equals(faithful.decisions)
    assert _summary_bytes(bulk) == _summary_bytes(faithful)


def _summary_bytes(result) -> bytes:
    return json.dumps(result.summary, sort_keys=True).encode()
