from __future__ import annotations

import io
import re

from rich.console import Console

from tracekit.report.terminal import _BAR_WIDTH, render_replay
from tracekit.report.view import describe_decision, format_sk


def render(renderable, width: int = 100) -> str:
    """Like rich's tests/render.py: print into a fixed-width in-memory console, no colour."""
    console = Console(width=width, file=io.StringIO(), color_system=None, legacy_windows=False)
    console.print(renderable)
    return console.file.getvalue()


def lines(text: str) -> list[str]:
    return [line.rstrip() for line in text.splitlines()]


def test_verdict_and_totals_lead_the_report(replay):
    out = lines(render(render_replay(replay)))
    s = replay.summary
    assert "MISMATCH" in out[1]
    assert (f"{s['decisions']} decisions: {s['matched']} matched, {s['mismatched']} mismatched, "
            f"{s['unknown']} unknown") in out[2]


def test_clean_replay_says_match_and_lists_no_mismatches(clean_replay):
    out = render(render_replay(clean_replay))
    assert "MATCH" in out and "MISMATCH" not in out
    assert "Mismatches" not in out
    assert "Unknown decisions" not in out


def test_verdict_is_coloured_by_outcome(replay, clean_replay):
    def verdict_colour(r) -> str:
        console = Console(width=100, file=io.StringIO(), color_system="standard")
        segments = console.render(render_replay(r))
        style = next(seg.style for seg in segments if seg.text.strip() in ("MATCH", "MISMATCH", "UNKNOWN ONLY"))
        return style.color.name

    assert verdict_colour(replay) == "red"
    assert verdict_colour(clean_replay) == "green"
    unknown_only = dict(clean_replay.summary, verdict="unknown-only")
    assert verdict_colour(type(clean_replay)(unknown_only, None)) == "yellow"


def test_provenance_names_trace_and_profile(replay):
    out = render(render_replay(replay))
    s = replay.summary
    assert f"trace {s['trace']['path']} (source {s['trace']['source']}, kernel {s['trace']['kernel']})" in out
    assert f"profile {s['profile']['name']} (chosen by {s['profile']['chosen_by']})" in out


def test_counts_per_host(replay):
    out = lines(render(render_replay(replay)))
    for host, counts in replay.summary["hosts"].items():
        row = next(line for line in out if line.split()[:1] == [host])
        assert row.split()[1:] == [str(counts[k]) for k in ("decisions", "matched", "mismatched", "unknown")]


def _group_block(out: list[str], group: dict) -> list[str]:
    start = out.index(next(line for line in out if line.startswith(f"{group['host']} · {group['group']}")))
    end = next((i for i in range(start + 1, len(out)) if out[i] and not out[i].startswith(" ")), len(out))
    return out[start:end]


def test_each_group_shows_counts_membership_in_array_order_and_load(replay):
    out = lines(render(render_replay(replay)))
    for group in replay.summary["groups"]:
        block = _group_block(out, group)
        assert f"reuseport_id {group['reuseport_id']}" in block[0]
        assert (f"{group['decisions']} decisions  {group['matched']} matched  "
                f"{group['mismatched']} mismatched  {group['unknown']} unknown") in block[1]
        rows = [line.split() for line in block[2:] if line.strip()]
        members = group["socks"] + group["closed"]
        assert [" ".join(r[1:3]) if r[0].startswith("[") else " ".join(r[0:2]) for r in rows] == \
            [format_sk(sk) for sk in members]
        live_slots = [r[0] for r in rows[: len(group["socks"])]]
        assert live_slots == [f"[{i}]" for i in range(len(group["socks"]))]
        for r in rows[len(group["socks"]):]:
            assert r[-1] == "closed"


def test_load_bars_scale_to_the_busiest_socket(replay):
    out = lines(render(render_replay(replay)))
    group = replay.summary["groups"][0]
    peak = max(group["load"].values())
    block = _group_block(out, group)
    for sk in group["socks"] + group["closed"]:
        row = next(line for line in block if re.search(rf"\b{format_sk(sk)} ", line))
        n = group["load"].get(str(sk), 0)
        assert row.count("█") == round(_BAR_WIDTH * n / peak)
        assert re.search(rf"[█·] {n}\b", row)


def test_migration_outcomes_are_shown_when_any(replay):
    out = render(render_replay(replay))
    for group in replay.summary["groups"]:
        m = group["migrations"]
        text = f"migrations: {m['migrated']} migrated, {m['reset']} reset"
        assert (text in out) == bool(m["migrated"] or m["reset"])


def test_first_mismatches_with_explanations(replay):
    out = render(render_replay(replay), width=200)
    mismatches = replay.summary["mismatches"]
    assert f"Mismatches (first {len(mismatches)} of {replay.summary['mismatched']})" in out
    for number, record in enumerate(mismatches, 1):
        assert f"{number}. {describe_decision(record)}  [{record['reason']}]" in out
        assert record["explanation"] in out


def test_no_explain_hides_explanations_but_keeps_the_decisions(replay):
    out = render(render_replay(replay, explain=False), width=200)
    for record in replay.summary["mismatches"]:
        assert describe_decision(record) in out
        assert record["explanation"] not in out


def test_max_mismatches_caps_the_list(replay):
    out = render(render_replay(replay, max_mismatches=1), width=200)
    first, second = replay.summary["mismatches"][:2]
    assert f"Mismatches (first 1 of {replay.summary['mismatched']})" in out
    assert describe_decision(first) in out
    assert describe_decision(second) not in out
    assert "Mismatches" not in render(render_replay(replay, max_mismatches=0))


def test_unknown_reasons_most_frequent_first(replay):
    out = lines(render(render_replay(replay)))
    reasons = replay.summary["unknown_reasons"]
    rows = [line.split() for line in out if line.split()[:1] and line.split()[0] in reasons]
    assert {r[0]: int(r[1]) for r in rows} == reasons
    assert [int(r[1]) for r in rows] == sorted(reasons.values(), reverse=True)


def test_summary_dict_alone_renders_the_same_report(replay):
    assert render(render_replay(replay.summary)) == render(render_replay(replay))


def test_rendering_is_deterministic(replay):
    assert render(render_replay(replay)) == render(render_replay(replay))


def test_departed_sockets_beyond_the_ten_busiest_are_summed_in_one_row(tmp_path):
    """A long replay sees thousands of sockets come and go: the load table keeps the live and
    closed ones, the ten busiest departed ones, and one row for the rest, with their total."""
    from tracekit.simulator.api import simulate
    from tracekit.replay.api import replay as run_replay

    result = run_replay(simulate("mutation-heavy", events=20_000, seed=2,
                                 output=tmp_path / "t.parquet"))
    group = max(result.summary["groups"], key=lambda g: len(g["load"]))
    members = set(group["socks"]) | set(group["closed"])
    gone = sorted(((n, int(sk)) for sk, n in group["load"].items() if int(sk) not in members),
                  key=lambda item: (-item[0], item[1]))
    assert len(gone) > 10
    out = render(render_replay(result), width=120)
    hidden = gone[10:]
    assert re.search(rf"{len(hidden)} more\s+{sum(n for n, _ in hidden)}\s+gone", out)
    assert all(re.search(rf"\b{format_sk(sk)}\b", out) for _, sk in gone[:10])
