"""Reports of a fleet stay small and readable: 100 groups, millions of decisions, thousands of
departed sockets, a long membership history."""

from __future__ import annotations

import re

import pytest
from rich.console import Console

import tracekit
from tracekit.report import render_html, render_replay
from tracekit.report.terminal import TABLE_ROWS
from tracekit.report.view import GROUPS_DETAILED


def _fleet_summary(groups: int = 100, decisions_each: int = 100_000) -> dict:
    """A summary as `replay` gives it, of `groups` groups with 32 live sockets and 500 that left."""
    entries = []
    for i in range(groups):
        load = {str(sk): decisions_each // 600 for sk in range(532)}
        entries.append({
            "host": f"sim-{i // 4:02d}", "group": f"group {i % 4}", "reuseport_id": i % 4,
            "proto": "tcp", "decisions": decisions_each, "matched": decisions_each,
            "mismatched": 1 if i == 77 else 0, "unknown": 0, "socks": list(range(500, 532)),
            "closed": [], "prog": None, "load": load, "migrations": {"migrated": 0, "reset": 0},
        })
    total = groups * decisions_each
    return {"format": "tracekit-result/1", "verdict": "match", "decisions": total,
            "matched": total, "mismatched": 0, "unknown": 0, "profile": {"name": "6.13"},
            "trace": {"path": "fleet.parquet"}, "groups": entries, "unknown_reasons": {},
            "hosts": {f"sim-{h:02d}": {"decisions": 4 * decisions_each} for h in range(groups // 4)},
            "mismatches": []}


def test_hundred_groups_ten_million_decisions_stay_small():
    summary = _fleet_summary()
    html = render_html(summary)
    assert len(html) < 250_000
    # every group is named; the detailed ones (and the one with a mismatch) have their chart
    assert html.count("load per socket in ") // 2 == GROUPS_DETAILED + 1
    assert f"{100 - GROUPS_DETAILED - 1} more groups" in html
    assert "sim-19 &middot; <code>group 1</code>" in html  # group 77 mismatched: detailed
    # departed sockets: the ten busiest and one bar for the rest
    assert "490 more" in html
    console = Console(width=100, record=True, color_system=None)
    console.print(render_replay(summary))
    lines = console.export_text().splitlines()
    assert len(lines) < 1500
    # the 75 groups past the detailed ones: a table of TABLE_ROWS lines, and what was left out
    assert sum(1 for line in lines if re.match(r"\s+sim-\d\d\s+group \d", line)) == TABLE_ROWS
    assert f"{TABLE_ROWS} of 75 groups shown (the most mismatches, then unknowns)" in "\n".join(lines)


def test_a_fleet_of_hosts_shows_its_worst_hosts_in_a_terminal():
    summary = _fleet_summary(groups=4)
    summary["hosts"] = {f"host-{h:03d}": {"decisions": 10, "matched": 10} for h in range(600)}
    summary["hosts"]["host-500"] = {"decisions": 10, "matched": 7, "mismatched": 3}
    summary["hosts"]["host-300"] = {"decisions": 10, "matched": 9, "unknown": 1}
    console = Console(width=100, record=True, color_system=None)
    console.print(render_replay(summary))
    text = console.export_text()
    shown = re.findall(r"^\s+(host-\d+)\s", text, re.M)
    # the two that diverged, then the first in name order, all in name order
    assert shown == sorted(["host-300", "host-500"] + [f"host-{h:03d}" for h in range(TABLE_ROWS - 2)])
    assert f"{TABLE_ROWS} of 600 hosts shown" in text


@pytest.mark.slow
def test_a_fleet_replay_report(tmp_path):
    """A simulated 25-host fleet (100 groups): the real replay's HTML report, timelines and all."""
    trace = tmp_path / "fleet.parquet"
    tracekit.simulate("steady", events=250_000, seed=4, output=trace, hosts=25)
    replay = tracekit.replay(trace)
    assert len(replay.groups) == 100
    html = render_html(replay)
    assert len(html) < 400_000
    assert len(re.findall(r'<svg [^>]*class="timeline"', html)) == 24
