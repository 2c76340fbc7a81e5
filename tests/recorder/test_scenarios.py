"""Every built-in scenario records here, and the ported selftests' assertions hold on this kernel."""

from __future__ import annotations

import pytest

from tracekit.recorder import list_scenarios, record, record_scenario
from tracekit.recorder.library import builtin_scenario

pytestmark = [pytest.mark.kernel, pytest.mark.usefixtures("kernel_recording")]
SCENARIOS = sorted(list_scenarios())


def test_library_has_the_selftest_ports_and_stories():
    origins = {builtin_scenario(name).origin for name in SCENARIOS}
    for selftest in ("reuseport_bpf.c", "reuseport_bpf_cpu.c", "reuseport_dualstack.c", "reuseport_addr_any.c",
                     "migrate_reuseport.c", "select_reuseport.c"):
        assert any(origin and origin.endswith(selftest) for origin in origins), selftest
    assert sum(name.startswith("story-") for name in SCENARIOS) >= 7
    assert all(list_scenarios()[name] for name in SCENARIOS)


@pytest.mark.parametrize("name", SCENARIOS)
def test_scenario_records_and_its_expectations_hold(name):
    recording = record_scenario(name)
    assert recording.failures == []
    rows = recording.capture.rows
    assert [r["seq"] for r in rows] == list(range(len(rows)))
    assert {r["event"] for r in rows} >= {"socket", "bind"}
    unobserved = {r["lport"] for r in rows if r["event"] == "bind" and _has_program(rows, r["sk"])}
    for row in rows:
        if row["event"] in ("syn", "datagram") and row["lport"] not in unobserved:
            connected = any(r["event"] == "connect" and (r["raddr"], r["rport"]) == (row["raddr"], row["rport"]) for r in rows)
            assert "hash" in row or connected, row
            assert "cpu" in row


def _has_program(rows, sk) -> bool:
    return any(r["event"] == "setsockopt" and r["name"] in ("SO_ATTACH_REUSEPORT_CBPF", "SO_DETACH_REUSEPORT_BPF") for r in rows)


def test_migration_counters_are_in_the_metadata(tmp_path):
    from tracekit.trace import read_metadata, validate_trace

    path = record("selftest-migrate_reuseport-close-v4", output=tmp_path / "m.parquet")
    validate_trace(path)
    metadata = read_metadata(path)
    assert int(metadata["tracekit.mib.TCPMigrateReqSuccess"]) > 0
    assert metadata["tracekit.mib.TCPMigrateReqFailure"] == "0"
    assert metadata["tracekit.observer"] == "sk_reuseport-hash/1"
    assert metadata["tracekit.source"] == "record"


def test_kernel_breaking_an_expectation_is_reported(tmp_path):
    from tracekit.recorder.api import ExpectationFailed
    from tracekit.recorder.scenario import parse_scenario

    wrong = parse_scenario({
        "name": "wrong",
        "step": [
            {"op": "open", "socks": ["a", "b"], "proto": "udp", "addr": "127.0.0.1", "port": 8000},
            {"op": "setsockopt", "sock": "a", "name": "SO_ATTACH_REUSEPORT_CBPF", "prog": "cpu"},
            {"op": "datagrams", "label": "d", "addr": "127.0.0.1", "port": 8000, "count": 2, "cpu": [0, 0]},
        ],
        "expect": [{"step": "d", "only": ["b"]}],
    })
    with pytest.raises(ExpectationFailed, match="went to a, expected b"):
        record(wrong, output=tmp_path / "w.parquet")
    assert (tmp_path / "w.parquet").exists()


def test_wildcard_rolling_restart_replays_fully(tmp_path):
    # 0.0.0.0 listeners: each syn carries the re-probed sk_hash of its connection (the hash over
    # 127.0.0.1, not INADDR_ANY), and the queued connections of each closed listener migrate by it
    from tracekit.replay import replay
    from tracekit.trace import read_metadata, read_trace

    path = record("story-rolling-restart-wildcard", output=tmp_path / "w.parquet")
    rows, metadata = read_trace(path), read_metadata(path)
    syns = rows[rows["event"] == "syn"]
    assert len(syns) and syns["sk_hash"].notna().all() and (syns["sk_hash"] != syns["hash"]).all()
    assert (metadata["tracekit.observer.sk_hash"], metadata["tracekit.observer.sk_hash_unresolved"]) == (str(len(syns)), "0")
    migrated = int(metadata["tracekit.mib.TCPMigrateReqSuccess"])
    assert migrated > 0
    result = replay(path, results=True)
    s = result.summary
    assert (s["mismatched"], s["unknown"]) == (0, 0), s["unknown_reasons"]
    assert s["decisions"] == len(syns)
    assert sum(g["migrations"].get("migrated", 0) for g in s["groups"]) == migrated
