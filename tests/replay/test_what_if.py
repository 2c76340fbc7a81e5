"""What-if replay: the model runs a recorded trace free with one change and says what would differ."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from click.testing import CliRunner
from tracebuilder import TraceBuilder, slot_hash

from tracekit.cli import main
from tracekit.errors import TracekitError
from tracekit.replay import replay
from tracekit.replay.whatif import ADDED_SK_BASE, parse_what_if
from tracekit.report import render_html, render_junit
from tracekit.report.json import result_schema, summary_json

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "recorded"
NO_MIGRATE = FIXTURES / "story-rolling-restart-no-migrate.parquet"
MIGRATE = FIXTURES / "story-rolling-restart-migrate.parquet"


def test_migration_would_have_avoided_every_reset_of_a_rolling_restart():
    r = replay(NO_MIGRATE, what_if=["net.ipv4.tcp_migrate_req=1"])
    w = r.summary["what_if"]
    jsonschema.validate(r.summary, result_schema())
    resets = sum(g["resets"] for g in r.summary["groups"])
    assert resets == 11 and r.summary["mismatched"] == 0
    assert w["resets"] == {"observed": 11, "avoided": 11, "added": 0}
    assert w["differ"] == w["moved"] == 11 and w["outcomes"] == {"reset_would_be_accepted": 11}
    assert w["migrations"]["migrated"] >= 11 and w["migrations"]["reset"] == 0
    (group,) = w["groups"]
    assert group["resets"] == 0 and sum(group["load"].values()) == 28  # every connection accepted
    assert sum(group["observed_load"].values()) == 28 - 11
    assert all(m["observed"] == -1 and m["what_if"] >= 0 and m["reason"] == "migration"
               for m in w["moves"])
    assert r.exit_code == 0  # a what-if reports; it does not fail the run


def test_the_reverse_migration_off_resets_what_migrated():
    plain = replay(MIGRATE)
    r = replay(MIGRATE, what_if=["net.ipv4.tcp_migrate_req=0"])
    w = r.summary["what_if"]
    migrated = sum(g["migrations"]["migrated"] for g in plain.summary["groups"])
    assert migrated > 0 and w["resets"]["observed"] == 0
    assert w["resets"]["added"] == w["outcomes"]["accepted_would_be_reset"] > 0
    assert w["migrations"] == {"migrated": 0, "reset": w["migrations"]["reset"]}


def test_what_if_json_is_canonical_and_in_every_report():
    a = replay(NO_MIGRATE, what_if=["net.ipv4.tcp_migrate_req=1"])
    b = replay(NO_MIGRATE, what_if=["net.ipv4.tcp_migrate_req=1"])
    assert summary_json(a.summary) == summary_json(b.summary)
    assert "What if" in render_html(a) and "reset_would_be_accepted: 11" in render_html(a)
    assert b"tracekit gates" in render_junit(a) and b"11 would have been avoided" in render_junit(a)


def test_close_and_add_a_socket_at_a_seq(tmp_path):
    b = TraceBuilder().tcp_listeners([1, 2])  # slot 0 sk 1, slot 1 sk 2; seq 1..8
    for i in range(6):  # slot 0 of 2 stays slot 0 of 3; 0xf0000000 is slot 1 of 2, slot 2 of 3
        b.conn(20000 + i, slot_hash(0, 2, salt=i) if i % 2 == 0 else 0xF0000000 + i)
    for i in range(6):
        b.accept(i % 2 + 1, 20000 + i)
    trace = b.write(tmp_path / "t.parquet")
    # sk 2 closed before the first syn: everything goes to sk 1
    w = replay(trace, what_if=["close=2@9"]).summary["what_if"]
    assert w["applied"] == [{"applied": True, "at": 9, "change": "close=2@9", "host": "h1", "sk": 2}]
    assert w["outcomes"] == {"moved_to_another_socket": 3}
    assert w["groups"][0]["load"] == {"1": 6}
    # a third socket like sk 1 before the first syn: the hashes now spread over three
    w = replay(trace, what_if=["add=1@9"]).summary["what_if"]
    assert w["applied"][0]["sk"] == ADDED_SK_BASE + 1
    assert w["groups"][0]["socks"] == [1, 2, ADDED_SK_BASE + 1]
    assert w["groups"][0]["load"] == {"1": 3, str(ADDED_SK_BASE + 1): 3}
    assert w["differ"] == w["moved"] == w["outcomes"]["moved_to_another_socket"] == 3
    # a socket the trace never had is reported as not applied
    w = replay(trace, what_if=["close=h1:9@3"]).summary["what_if"]
    assert w["applied"][0]["applied"] is False and w["differ"] == 0


def test_a_socket_change_without_a_host_happens_on_every_host(tmp_path):
    from tracekit.trace import write_trace

    rows = []
    for host in ("h1", "h2"):
        b = TraceBuilder(host).tcp_listeners([1, 2])
        for i in range(4):
            b.conn(20000 + i, slot_hash(i % 2, 2, salt=i))
        for i in range(4):
            b.accept(i % 2 + 1, 20000 + i)
        rows += b.rows
    trace = write_trace(tmp_path / "two.parquet", rows, {"tracekit.kernel": "6.18.0"}, source="test")
    w = replay(trace, what_if=["close=2@9"]).summary["what_if"]
    assert [(a["host"], a["at"]) for a in w["applied"]] == [("h1", 9), ("h2", 9)]
    assert [g["load"] for g in w["groups"]] == [{"1": 4}, {"1": 4}]
    w = replay(trace, what_if=["close=h2:2@9"]).summary["what_if"]
    assert [g["load"] for g in w["groups"]] == [{"1": 2, "2": 2}, {"1": 4}]


def test_profile_what_if_runs_the_other_profile():
    w = replay(NO_MIGRATE, what_if=["profile=5.14"]).summary["what_if"]
    assert w["changes"] == ["profile=5.14"] and w["differ"] == 0


@pytest.mark.parametrize("spec, message", [
    ("net.ipv4.tcp_fastopen=1", "reads no sysctl"), ("profile=4.0", "unknown kernel profile"),
    ("close=x@1", "close=SK@SEQ"), ("net.ipv4.tcp_migrate_req", "NAME=VALUE"),
])
def test_bad_what_ifs_are_refused(spec, message):
    with pytest.raises(TracekitError, match=message):
        parse_what_if([spec])
    result = CliRunner().invoke(main, ["replay", str(NO_MIGRATE), "--what-if", spec])
    assert result.exit_code == 2 and message in result.output


def test_cli_prints_the_what_if_section(tmp_path):
    out = tmp_path / "s.json"
    result = CliRunner().invoke(main, ["replay", str(NO_MIGRATE), "--what-if",
                                       "net.ipv4.tcp_migrate_req=1", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "What if" in result.output and "11 would have been avoided" in result.output
    assert json.loads(out.read_text())["what_if"]["resets"]["avoided"] == 11


def test_kernel_layer_trace_without_migration_resets_every_migration(tmp_path):
    """A simulated probe trace (kernel-layer calls): with tcp_migrate_req=0 each observed
    `reuseport_migrate_sock` that found a listener would have found none."""
    from tracekit.simulator.api import simulate
    from tracekit.trace.read import read_trace

    trace = simulate("rolling-restart", events=3000, seed=2, output=tmp_path / "rr.parquet")
    frame = read_trace(trace)
    migrated = int(((frame["event"] == "reuseport_migrate_sock") & (frame["observed"] >= 0)).sum())
    w = replay(trace, what_if=["net.ipv4.tcp_migrate_req=0"]).summary["what_if"]
    assert migrated > 0
    assert w["outcomes"] == {"accepted_would_be_reset": migrated} == {"accepted_would_be_reset": w["resets"]["added"]}
    assert replay(trace, what_if=["net.ipv4.tcp_migrate_req=1"]).summary["what_if"]["differ"] == 0
