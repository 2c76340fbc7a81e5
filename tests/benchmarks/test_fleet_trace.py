"""The fleet benchmark data: real recordings replicated per host, same rows in both files."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import tracekit
from tracekit.trace import normalize_jsonl, read_metadata, read_trace

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def _fleet_module():
    if "fleet_trace" in sys.modules:
        return sys.modules["fleet_trace"]
    spec = importlib.util.spec_from_file_location("fleet_trace", REPO / "benchmarks" / "fleet_trace.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["fleet_trace"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    return _fleet_module().write_fleet(tmp_path_factory.mktemp("fleet"), hosts=12)


def test_every_host_is_a_whole_recording_with_its_own_name(fleet):
    module = _fleet_module()
    recordings = module.load_recordings()
    frame = read_trace(fleet.parquet)
    sizes = frame.groupby("host", observed=True).size()
    assert list(sizes.index) == [module.host_name(i) for i in range(12)]
    assert [int(n) for n in sizes] == [recordings[i % 10].num_rows for i in range(12)]
    assert fleet.rows == len(frame)
    assert read_metadata(fleet.parquet)["tracekit.observations"] == "complete"


def test_jsonl_interleaves_hosts_and_normalizes_to_the_same_rows(fleet, tmp_path):
    first_hosts = [line.split('"')[3] for line in fleet.jsonl.read_text().splitlines()[:200]]
    assert len(set(first_hosts)) > 1 and first_hosts != sorted(first_hosts)
    normalized = normalize_jsonl(fleet.jsonl, tmp_path / "n.parquet")
    assert pq.read_table(normalized).to_pylist() == pq.read_table(fleet.parquet).to_pylist()


def test_same_arguments_same_bytes(fleet, tmp_path):
    again = _fleet_module().write_fleet(tmp_path, hosts=12)
    assert again.jsonl.read_bytes() == fleet.jsonl.read_bytes()
    assert pq.read_table(again.parquet).equals(pq.read_table(fleet.parquet))


def test_the_kernel_decided_every_row_so_replay_matches_them_all(fleet):
    result = tracekit.replay(fleet.parquet)
    assert result.summary["decisions"] > 0
    assert (result.summary["mismatched"], result.summary["unknown"]) == (0, 0)
