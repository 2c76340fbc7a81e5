"""`record --random`: reproducible, complete, and explained by an independent check."""

from __future__ import annotations

import copy

import pytest

from independent_check import explain
from tracekit.recorder import record, record_scenario
from tracekit.recorder.randomwalk import random_scenario

pytestmark = [pytest.mark.kernel, pytest.mark.usefixtures("kernel_recording")]


def test_same_seed_same_operations():
    assert random_scenario(11, 60, cpus=2) == random_scenario(11, 60, cpus=2)
    assert random_scenario(11, 60, cpus=2) != random_scenario(12, 60, cpus=2)


def test_random_11_60_is_valid_complete_and_explained(tmp_path):
    from tracekit.trace import read_trace, validate_trace

    path = record(random_seed=11, steps=60, output=tmp_path / "t.parquet")
    validate_trace(path)
    rows = [{k: v for k, v in row.items() if v == v and v is not None} for row in read_trace(path).to_dict("records")]
    _assert_complete(rows)
    assert explain(rows) == []


@pytest.mark.parametrize("seed", range(20))
def test_random_walks_are_explained(seed):
    rows = record_scenario(random_seed=seed, steps=80).capture.rows
    _assert_complete(rows)
    assert explain(rows) == []


def test_the_check_notices_a_moved_observation():
    rows = record_scenario(random_seed=3, steps=80).capture.rows
    accepts = [r for r in rows if r["event"] == "accept"]
    sks = {r["sk"] for r in rows if r["event"] == "listen"}
    moved = copy.deepcopy(rows)
    victim = next(r for r in moved if r["event"] == "accept")
    victim["sk"] = next(sk for sk in sks if sk != victim["sk"])
    assert accepts and explain(moved)


def _assert_complete(rows):
    """Every SYN has the CPU and ends in accept or reset, and the kernel's hash unless nothing
    listened (refused): the observer's, or re-probed where a classic BPF program replaced the
    observer; a SYN to a wildcard group also has its connection's sk_hash. Every datagram has its
    CPU (a datagram without hash is one no selection ran for: explain() flags any other)."""
    flows = lambda event: [(r["laddr"], r["lport"], r["raddr"], r["rport"]) for r in rows if r["event"] == event]  # noqa: E731
    syns = [r for r in rows if r["event"] == "syn"]
    refused = set(flows("reset"))
    accepted = [r for r in syns if (r["laddr"], r["lport"], r["raddr"], r["rport"]) not in refused]
    wildcard_ports = {r["lport"] for r in rows if r["event"] == "bind" and r["laddr"] in ("0.0.0.0", "::")}
    assert syns and all("cpu" in r for r in syns)
    assert all("hash" in r for r in accepted)
    assert all("sk_hash" in r for r in accepted if r["lport"] in wildcard_ports)
    assert all("cpu" in r for r in rows if r["event"] == "datagram")
    assert sorted(flows("syn")) == sorted(flows("accept") + flows("reset"))


def test_committed_random_fixture_is_explained():
    from pathlib import Path

    from tracekit.trace import read_metadata, read_trace

    path = Path(__file__).resolve().parents[2] / "fixtures" / "recorded" / "random-11-60.parquet"
    rows = [{k: v for k, v in row.items() if v == v and v is not None} for row in read_trace(path).to_dict("records")]
    assert read_metadata(path)["tracekit.kernel"].startswith("6.18")
    _assert_complete(rows)
    assert explain(rows) == []
