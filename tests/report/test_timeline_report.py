"""The group timeline in the HTML and terminal reports, on the recorded rolling restart, and the
sampled chart of a long history."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from rich.console import Console

import tracekit
from tracekit.report import render_html, render_replay
from tracekit.report.membership import Step, describe_step
from tracekit.report.timeline_chart import BINS, MAX_STEPS, timeline_chart

REPO = Path(__file__).resolve().parents[2]
ROLLING = REPO / "fixtures" / "recorded" / "story-rolling-restart-migrate.parquet"


@pytest.fixture(scope="module")
def rolling():
    return tracekit.replay(ROLLING)


def _timeline_svg(html: str) -> str:
    match = re.search(r'<svg [^>]*class="timeline".*?</svg>', html, re.S)
    assert match, "no timeline chart in the report"
    return match.group(0)


def test_html_timeline_of_the_rolling_restart(rolling):
    svg = _timeline_svg(render_html(rolling))
    # three listeners at first, then each replacement joins slot 3 and moves into the hole
    for sk, slot, first, last in [(0, 0, 4, 24), (1, 1, 8, 33), (2, 2, 12, 42), (3, 3, 24, 24),
                                  (3, 0, 25, 83), (4, 1, 34, 83), (5, 2, 43, 83)]:
        assert f"<title>sk {sk} in slot {slot}, seq {first}..{last}</title>" in svg
    for sk, slot, seq in [(3, 3, 25), (4, 3, 34), (5, 3, 43)]:
        assert f"seq {seq}: sk {sk} moved from slot {slot} to slot {sk - 3}" in svg
    # each close: marked, through the closed section, its queue migrated to the newcomer
    for closed, seq, to in [(0, 25, 3), (1, 34, 4), (2, 43, 5)]:
        assert f"\u2715 sk {closed}" in svg
        assert f"<title>sk {closed} in the closed section, seq {seq}..{seq}</title>" in svg
        assert (f"<title>seq {seq}: 4 queued connections of sk {closed} migrated to sk {to}"
                f"</title>") in svg
    assert svg.count('class="migration"') == 3


def test_html_lists_the_changes(rolling):
    html = render_html(rolling)
    assert ("seq 25 close sk 0: sk 3 moved from slot 3 to slot 0, sk 0 left slot 0 for the closed "
            "section, 4 queued connections of sk 0 migrated to sk 3, sk 0 left the group (from the "
            "closed section)") in html
    assert html == render_html(tracekit.replay(ROLLING))  # deterministic


def test_terminal_timeline_is_compact(rolling):
    console = Console(width=100, record=True, color_system=None)
    console.print(render_replay(rolling))
    text = console.export_text()
    assert "timeline (9 changes)" in text
    assert ("seq 25 close sk 0: sk 3 [3]->[0], sk 0 [0]->closed, 4 queued of sk 0 -> sk 3, "
            "sk 0 left") in text


def test_a_summary_dict_alone_still_renders(rolling):
    html = render_html(rolling.summary)
    assert 'class="timeline"' not in html and "tracekit replay" in html


def _churn(n: int, slots: int = 8) -> list[Step]:
    """`n` steps: `slots` listeners join, then each step replaces the socket in one slot."""
    steps = [Step(i, "listen", i, ((i, "joined", None, i),), ()) for i in range(slots)]
    sk = slots
    for i in range(n):
        slot = i % slots
        steps.append(Step(slots + 2 * i, "close", None, ((sk, "moved", slots, slot),
                                                         (sk - slots, "left", slot, None)), ()))
        sk += 1
    return steps


def test_long_history_is_sampled_and_bounded():
    small = timeline_chart(_churn(10), start=0, end=30, title="t")
    assert "sampled" not in small
    big = timeline_chart(_churn(20_000), start=0, end=41_000, title="t")
    assert "sampled" in big and f"{BINS} seq ranges" in big
    assert big.count("<rect") <= 1 + BINS + 8 * BINS
    assert len(big) < 400_000
    assert len(_churn(20_000)) > MAX_STEPS


def test_describe_a_reset_and_a_reopen():
    step = Step(9, "close", 2, ((2, "left", 1, None),), ((2, "reset", -1), (2, "migrated", 4)))
    assert describe_step(step) == ("seq 9 close sk 2: 2 queued connections of sk 2: 1 migrated to "
                                   "sk 4, 1 reset, sk 2 left the group (from slot 1)")
    back = Step(11, "listen", 2, ((2, "reopened", None, 1),), ())
    assert describe_step(back) == "seq 11 listen sk 2: sk 2 came back from the closed section to slot 1"


def test_elided_steps_are_those_of_every_step():
    """The terminal makes only the steps it shows; they, the count and the left-out number are
    those of all the steps."""
    import pandas as pd

    from tracekit.report.membership import elide, elided_steps, steps_of

    for n in (0, 1, 5, 8, 9, 10, 40):
        rows = pd.DataFrame(
            [{"seq": 3 * i, "event": "close", "cause": i, "sk": sk, "change": "joined",
              "from_slot": None, "to_slot": sk, "to_sk": None}
             for i in range(n) for sk in range(1 + i % 3)])
        if not n:
            rows = pd.DataFrame(columns=["seq", "event", "cause", "sk", "change", "from_slot",
                                         "to_slot", "to_sk"])
        steps = list(steps_of(rows))
        head, hidden, tail, total = elided_steps(rows, 3, 5)
        assert (head, hidden, tail, total) == (*elide(steps, 3, 5), len(steps))


def test_group_frames_of_some_groups_are_those_groups_frames(tmp_path):
    from tracekit.report.membership import group_frames
    from tracekit.simulator.api import simulate

    trace = simulate("rolling-restart", events=6_000, seed=3, hosts=3, output=tmp_path / "t.parquet")
    frame = tracekit.replay(trace).timeline()
    every = group_frames(frame)
    assert len(every) >= 3
    chosen = sorted(every)[::2] + [("no-such-host", "tcp 0.0.0.0:1")]
    some = group_frames(frame, only=chosen)
    assert sorted(some) == sorted(every)[::2]
    for key, part in some.items():
        assert part.equals(every[key])
