"""The one-pass hooks of one-socket membership rows (`tracekit.replay.hooks.OnePass`) record
what the faithful hooks (`GroupHistory.before/after`, `Timeline.before/after` around every
membership row) record: the same results bytes with every row explained (explanations cite the
history), summary, timeline rows, and each host's history (its changes per group label, marks
and last members), on recorded, simulated and generated traces of both layers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stories import stories
from test_kernel_stories import _story_trace, kernel_story
from test_membership_hooks import RECORDED, TRACES
from tracebuilder import TraceBuilder
from tracekit.errors import TraceFormatError
from tracekit.replay import engine, hooks
from tracekit.replay.api import replay, write_results
from tracekit.report.json import summary_json
from tracekit.simulator.api import simulate
from tracekit.trace import write_trace

CBPF_RET_0 = bytes([0x06, 0, 0, 0, 0, 0, 0, 0])  # ret #0


def outputs(path: Path, tmp_path: Path, monkeypatch, one_pass: bool) -> tuple:
    """What a replay records with or without the one-pass hooks, and how often they took the
    faithful hooks for a row that moved its socket to another group (`OnePass._faithful`)."""
    monkeypatch.setattr(hooks, "ONE_PASS", one_pass)
    engines: list[engine.Engine] = []
    finish = engine.Engine.finish
    monkeypatch.setattr(engine.Engine, "finish",
                        lambda self, complete: (engines.append(self), finish(self, complete))[1])
    moved: list[int] = []
    faithful = hooks.OnePass._faithful
    monkeypatch.setattr(hooks.OnePass, "_faithful",
                        lambda self, *args: (moved.append(1), faithful(self, *args))[1])
    try:
        result = replay(path, results=True, explain_all=True)
    except TraceFormatError as error:
        return (str(error), error.host, error.seq, error.column), len(moved)
    results = write_results(result, tmp_path / f"results-{one_pass}.parquet").read_bytes()
    histories = {name: ({label: [c.describe() for c in log]
                         for label, log in hs.history.changes.items()},
                        hs.history.marks, hs.history.last)
                 for e in engines for name, hs in e.hosts.items()}
    return (results, summary_json(result.summary), result.timeline().to_csv(), histories,
            len(result.timeline())), len(moved)


def assert_same(path: Path, tmp_path: Path, monkeypatch) -> int:
    """Asserts both ways record alike; returns how many rows took `_faithful`."""
    one_pass, moved = outputs(path, tmp_path, monkeypatch, True)
    faithful, none = outputs(path, tmp_path, monkeypatch, False)
    assert none == 0
    assert one_pass == faithful
    return moved


@pytest.mark.parametrize("source", [*TRACES, "socket", "kernel"],
                         ids=[p.stem for p in TRACES] + ["simulated-socket", "simulated-kernel"])
def test_recorded_and_simulated_traces_record_the_same_in_one_pass(source, tmp_path,
                                                                    monkeypatch):
    """(`source`: a recorded trace, or a mutation-heavy trace of that layer with faults)"""
    path = source if isinstance(source, Path) else simulate(
        "mutation-heavy", layer=source, events=6_000, seed=5, hosts=2, inject_faults=0.01,
        output=tmp_path / "t.parquet")
    assert_same(path, tmp_path, monkeypatch)
    if not isinstance(source, Path):
        assert outputs(path, tmp_path, monkeypatch, True)[0][4] > 100  # (timeline rows)


def test_a_listener_that_joins_another_group_takes_the_faithful_hooks(tmp_path, monkeypatch):
    """A program attached to an unbound SO_REUSEPORT socket gives it a group of its own
    (`reuseport_attach_prog()` -> `reuseport_alloc()`); its listen then moves it into the
    listeners' group of its port: one row, two groups. Then the listener stops with a queued
    connection (migrated while the close's event is open)."""
    b = TraceBuilder().tcp_listeners([1, 2])
    b.add("socket", sk=3, proto="tcp", family=4)
    b.add("setsockopt", sk=3, name="SO_REUSEPORT", value=1, ret=0)
    b.add("setsockopt", sk=3, name="SO_ATTACH_REUSEPORT_CBPF", prog=CBPF_RET_0, ret=0)
    b.add("bind", sk=3, laddr="127.0.0.1", lport=8080, ret=0)
    b.add("listen", sk=3, ret=0)
    b.add("sysctl", name="net.ipv4.tcp_migrate_req", value=1)
    b.conn(40000, 7).add("close", sk=1, cpu=0).accept(3, 40000)
    path = b.write(tmp_path / "t.parquet")
    assert assert_same(path, tmp_path, monkeypatch) == 1
    timeline = outputs(path, tmp_path, monkeypatch, True)[0][2]
    assert "migrated" in timeline and "joined" in timeline


@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(stories=st.lists(kernel_story(), min_size=1, max_size=2))
def test_generated_kernel_stories_record_the_same_in_one_pass(tmp_path, monkeypatch, stories):
    assert_same(_story_trace(tmp_path, stories), tmp_path, monkeypatch)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(story=stories())
def test_nonsense_stories_record_the_same_in_one_pass(tmp_path, monkeypatch, story):
    rows, complete = story
    meta = {"tracekit.observations": "complete"} if complete else {}
    path = write_trace(tmp_path / "s.parquet", rows, meta, source="test")
    assert_same(path, tmp_path, monkeypatch)


def test_the_checks_compare_something(tmp_path, monkeypatch):
    """(The outputs hold the history and timeline rows of a trace that changes groups.)"""
    path = RECORDED / "story-rolling-restart-migrate.parquet"
    (results, summary, timeline, histories, rows), _ = outputs(path, tmp_path, monkeypatch, True)
    assert rows > 10 and any(changes for changes, _marks, _last in histories.values())
    assert json.loads(summary)["decisions"] > 0
