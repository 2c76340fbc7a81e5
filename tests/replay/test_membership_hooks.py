"""`Engine.row` calls the history's and the timeline's hooks after a membership event none of
whose sockets was in a group before (`engine.UNHOOKED_WITHOUT_GROUP`), or not at all when none
is in a group after either: the same timeline rows, history (explanations cite it) and results
bytes as calling them around every membership event, on the socket and the kernel layer."""

from __future__ import annotations

from pathlib import Path

import pytest

from tracekit.replay import engine, hooks
from tracekit.replay.api import replay, write_results
from tracekit.report.json import summary_json
from tracekit.simulator.api import simulate

RECORDED = Path(__file__).parents[2] / "fixtures" / "recorded"
TRACES = sorted(RECORDED.glob("*.parquet")) + sorted((RECORDED / "fleet").glob("*.parquet"))[:3]


def outputs(path: Path, tmp_path: Path, monkeypatch, skip: bool) -> tuple:
    """Results bytes (every row explained: explanations read the history), summary JSON, the
    timeline's rows and each host's recent changes per group, with or without the skip."""
    monkeypatch.setattr(hooks, "ONE_PASS", False)  # (the faithful hooks: `test_one_pass_hooks`)
    monkeypatch.setattr(engine, "UNHOOKED_WITHOUT_GROUP",
                        engine.MEMBERSHIP - {"close", "shutdown"} if skip else frozenset())
    calls: list[int] = []
    original = engine.Engine._record
    monkeypatch.setattr(engine.Engine, "_record",
                        lambda self, *args: (calls.append(1), original(self, *args))[1])
    result = replay(path, results=True, explain_all=True)
    results = write_results(result, tmp_path / f"results-{skip}.parquet").read_bytes()
    timeline = result.timeline()
    return (results, summary_json(result.summary), timeline.to_csv(), len(timeline), len(calls))


def assert_same(path: Path, tmp_path: Path, monkeypatch) -> None:
    skipped = outputs(path, tmp_path, monkeypatch, True)
    hooked = outputs(path, tmp_path, monkeypatch, False)
    assert skipped[:3] == hooked[:3]
    assert hooked[4] == 0  # (the hooks around every event: no late ones)


@pytest.mark.parametrize("path", TRACES, ids=[p.stem for p in TRACES])
def test_recorded_traces_record_the_same_with_late_hooks(path, tmp_path, monkeypatch):
    assert_same(path, tmp_path, monkeypatch)


@pytest.mark.parametrize("layer", ["socket", "kernel"])
def test_simulated_traces_record_the_same_with_late_hooks(layer, tmp_path, monkeypatch):
    path = simulate("mutation-heavy", layer=layer, events=6_000, seed=3, hosts=2,
                    inject_faults=0.01, output=tmp_path / "t.parquet")
    skipped = outputs(path, tmp_path, monkeypatch, True)
    assert skipped[3] > 50 and skipped[4] > 0  # (timeline rows; late hooks taken)
    assert_same(path, tmp_path, monkeypatch)
