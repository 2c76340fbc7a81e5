"""Where kernels differ, an explanation names what the replay's profile did (recorded traces)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tracekit.replay import replay

RECORDED = Path(__file__).parents[2] / "fixtures" / "recorded"


@pytest.mark.parametrize("trace,profile,note", [
    ("story-incoming-cpu", "5.14", "profile 5.14: hash selection ignores SO_INCOMING_CPU (before 6.2)"),
    ("story-udp-connected", "6.5", "stay in the group (before 6.13)"),
    ("debian-6.1-story-udp-connected", "6.13", "profile 6.13: a connected UDP socket leaves its group"),
])
def test_mismatch_under_another_kernels_profile_names_the_behaviour(trace, profile, note):
    result = replay(RECORDED / f"{trace}.parquet", profile=profile)
    assert result.summary["mismatched"] > 0
    assert all(note in m["explanation"] for m in result.summary["mismatches"]), result.summary["mismatches"][0]


def test_summary_says_what_the_profile_switches():
    profile = replay(RECORDED / "story-udp-connected.parquet").summary["profile"]
    assert profile["name"] == "6.13" and "a connected UDP socket leaves its group (4-tuple hash)" in profile["switches"]
