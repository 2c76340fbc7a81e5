"""`--profile fit`: the profile a trace's behaviour fits best, judged on traces from real kernels."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from tracekit.cli import main
from tracekit.replay import replay
from tracekit.replay.fit import fit_profile

RECORDED = Path(__file__).parents[2] / "fixtures" / "recorded"


def test_udp_connected_on_6_18_fits_only_the_profile_with_the_4_tuple_hash() -> None:
    fit = fit_profile(RECORDED / "story-udp-connected.parquet")
    assert fit.best.name == "6.13" and fit.tied == ("6.13",)
    assert {s.profile: s.mismatched for s in fit.scores}["6.5"] > 0
    assert fit.describe().startswith("best fit (mismatches per profile: 5.14: ")


def test_incoming_cpu_rules_out_the_profile_without_it_and_names_the_tie() -> None:
    fit = fit_profile(RECORDED / "story-incoming-cpu.parquet")
    by_name = {s.profile: s for s in fit.scores}
    assert by_name["5.14"].mismatched > 0 and "5.14" not in fit.tied
    assert fit.best.name == fit.tied[-1]
    assert fit.describe().endswith(f"{', '.join(fit.tied)} fit equally, the newest is used")


def test_replay_with_profile_fit_reports_why() -> None:
    result = replay(RECORDED / "story-udp-connected.parquet", profile="fit")
    assert result.summary["profile"]["name"] == "6.13"
    assert result.summary["profile"]["chosen_by"].startswith("best fit")
    out = CliRunner().invoke(main, ["replay", str(RECORDED / "story-udp-connected.parquet"), "--profile", "fit"])
    assert out.exit_code == 0 and "best fit (mismatches per profile" in out.output
