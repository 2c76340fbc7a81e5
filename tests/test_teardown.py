"""A replay's dead model state: not walked by the collector while the result is made, and left
to the exit of processes that end with their command (`tracekit.teardown`)."""

from __future__ import annotations

import gc
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "fixtures" / "recorded" / "story-rolling-restart-migrate.parquet"


def test_no_collection_runs_while_replay_makes_its_result(monkeypatch):
    """With the collector set to run at every allocation, none runs from inside the summary or
    the result's making: the model state is not walked (`_heap_frozen` covers them)."""
    from tracekit.replay import api

    seen: list[str] = []

    def watch(phase: str, info: dict) -> None:
        if phase != "start":
            return
        frame = sys._getframe(1)
        while frame is not None:
            if frame.f_code.co_name in ("build_summary", "to_pandas", "register_groups"):
                seen.append(frame.f_code.co_name)
                return
            frame = frame.f_back

    thresholds = gc.get_threshold()
    gc.callbacks.append(watch)
    gc.set_threshold(1, 1, 1)
    try:
        api.replay(FIXTURE)
        gc.collect()  # (the callback runs; outside the replay)
    finally:
        gc.set_threshold(*thresholds)
        gc.callbacks.remove(watch)
    assert seen == []
    # and the check can fail: the same summary made with the collector on is seen
    gc.callbacks.append(watch)
    gc.set_threshold(1, 1, 1)
    try:
        from tracekit.replay.sink import DecisionSink
        api.build_summary(DecisionSink(), profile={}, trace={})
    finally:
        gc.set_threshold(*thresholds)
        gc.callbacks.remove(watch)
    assert seen and set(seen) == {"build_summary"}


def _frozen_after_replay(entry: str) -> tuple[str, int]:
    """The exit status and how many objects were frozen after `tracekit replay` run through
    `entry` of `tracekit.cli` in a fresh process."""
    script = (
        "import gc, sys\n"
        f"from tracekit.cli import {entry}\n"
        f"sys.argv = ['tracekit', 'replay', {str(FIXTURE)!r}]\n"
        "try:\n"
        f"    {entry}()\n"
        "except SystemExit as exit:\n"
        "    code = exit.code\n"
        "print(code, gc.get_freeze_count())\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True, cwd=REPO)
    code, frozen = out.stdout.split()[-2:]
    return code, int(frozen)


def test_the_command_leaves_the_dead_state_to_its_exit():
    """`tracekit replay` freezes what there is once the replay returned, in the command's own
    process (`run`, the entry point), not where `main` runs in-process (a test's CliRunner)."""
    code, frozen = _frozen_after_replay("run")
    assert code in ("0", "None") and frozen > 10_000
    code, frozen = _frozen_after_replay("main")
    assert code in ("0", "None") and frozen == 0
