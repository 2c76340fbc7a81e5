from __future__ import annotations

import re
from html.parser import HTMLParser

import pandas as pd
from hypothesis import given
from hypothesis import strategies as st

from tracekit.report.html import VERDICT_COLORS, _seq_columns, render_fragment, render_html
from tracekit.report.view import format_sk, ordered_load

VOID = {"meta", "br", "hr", "img", "input", "link"}


class _Tags(HTMLParser):
    """Checks that every non-void element closes, in order, and collects what the page loads."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.external: list[str] = []
        self.text: list[str] = []
        self.svgs = 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag in ("script", "link", "img", "iframe") or "src" in attrs or "href" in attrs:
            self.external.append(tag)
        self.svgs += tag == "svg"
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        pass

    def handle_endtag(self, tag):
        if not self.stack or self.stack.pop() != tag:
            self.errors.append(tag)

    def handle_data(self, data):
        self.text.append(data)


def parse(page: str) -> _Tags:
    parser = _Tags()
    parser.feed(page)
    parser.close()
    return parser


def test_page_is_well_formed_and_self_contained(replay):
    page = render_html(replay)
    assert page.startswith("<!DOCTYPE html>")
    tags = parse(page)
    assert tags.errors == [] and tags.stack == []
    assert tags.external == []
    assert "<style>" in page


def test_page_is_deterministic_and_independent_of_table_order(replay):
    shuffled = type(replay)(replay.summary, replay.decisions.sample(frac=1, random_state=7))
    assert render_html(replay) == render_html(replay) == render_html(shuffled)


def test_verdict_counts_and_provenance(replay):
    s = replay.summary
    text = " ".join(parse(render_html(replay)).text)
    assert "MISMATCH" in text
    assert f"{s['decisions']} decisions: {s['matched']} matched, {s['mismatched']} mismatched, {s['unknown']} unknown" in text
    for value in (s["trace"]["path"], s["profile"]["name"], s["profile"]["chosen_by"], *s["trace"]["metadata"]):
        assert value in text


def test_groups_show_membership_and_one_load_bar_per_socket(replay):
    page = render_html(replay)
    for group in replay.summary["groups"]:
        label = f"load per socket in {group['group']} on {group['host']}"
        svg = re.search(rf'<svg [^>]*aria-label="{re.escape(label)}".*?</svg>', page, re.S).group(0)
        bars = re.findall(r'<rect [^>]*width="([\d.]+)"[^>]*><title>(sk \d+): (\d+)', svg)
        rows = ordered_load(group)
        assert [b[1] for b in bars] == [format_sk(sk) for sk, _, _ in rows]
        assert [int(b[2]) for b in bars] == [n for _, n, _ in rows]
        peak = max(n for _, n, _ in rows)
        # the plot is 300 px less what the longest value text ("13 closed") needs after it
        plot = max(float(width) for width, _, n in bars if int(n) == peak)
        assert 240 <= plot <= 300
        for width, _, n in bars:
            assert abs(float(width) - plot * int(n) / peak) < 0.1
        live = " ".join(f"[{i}]&nbsp;{format_sk(sk)}" for i, sk in enumerate(group["socks"]))
        assert live in page


def test_verdict_chart_has_a_bar_per_verdict(replay):
    page = render_html(replay)
    s = replay.summary
    for verdict, key in (("match", "matched"), ("mismatch", "mismatched"), ("unknown", "unknown")):
        assert f'fill="{VERDICT_COLORS[verdict]}"><title>{verdict}: {s[key]}</title>' in page


def test_decisions_over_seq_account_for_every_decision(replay):
    page = render_html(replay)
    for host, counts in replay.summary["hosts"].items():
        svg = re.search(rf'aria-label="decisions over seq on {host}".*?</svg>', page, re.S).group(0)
        per_verdict = {"match": 0, "mismatch": 0, "unknown": 0}
        for n, verdict in re.findall(r"<title>seq \d+-\d+: (\d+) (\w+)</title>", svg):
            per_verdict[verdict] += int(n)
        assert per_verdict == {"match": counts["matched"], "mismatch": counts["mismatched"],
                               "unknown": counts["unknown"]}


def test_summary_only_page_has_no_seq_chart_but_everything_else(summary):
    page = render_html(summary)
    assert "Decisions over seq" not in page
    assert "Mismatches" in page and "Hosts" in page


def test_mismatch_explanations_are_escaped(replay):
    page = render_html(replay)
    for record in replay.summary["mismatches"]:
        assert record["explanation"].replace(">", "&gt;") in page
        assert record["explanation"] not in page  # the raw '->' never reaches the page


def test_user_text_cannot_inject_markup(replay):
    summary = dict(replay.summary, trace=dict(replay.summary["trace"], path="<script>x</script>"))
    groups = [dict(g, group='udp "<b>"') for g in summary["groups"]]
    page = render_html(dict(summary, groups=groups))
    assert "<script>" not in page and "<b>" not in page
    assert parse(page).errors == []


def test_fragment_is_the_page_body(replay):
    fragment = render_fragment(replay)
    assert fragment.startswith('<div class="tracekit-report">')
    assert fragment in render_html(replay)


@given(st.lists(st.integers(min_value=-(2**40), max_value=2**40), min_size=1, max_size=200, unique=True))
def test_seq_bins_cover_each_seq_once_and_in_order(seqs):
    columns = _seq_columns(sorted(seqs), ["match"] * len(seqs))
    ranges = [tuple(map(int, re.fullmatch(r"seq (-?\d+)-(-?\d+)", c.label).groups())) for c in columns]
    assert ranges[0][0] == min(seqs) and ranges[-1][1] == max(seqs)
    assert all(a[1] + 1 == b[0] for a, b in zip(ranges, ranges[1:]))
    for (first, last), column in zip(ranges, columns):
        inside = sum(first <= s <= last for s in seqs)
        assert sum(seg.value for seg in column.segments) == inside


def test_empty_replay_renders():
    summary = {"format": "tracekit-result/1", "verdict": "match", "decisions": 0, "matched": 0,
               "mismatched": 0, "unknown": 0, "hosts": {}, "groups": [], "unknown_reasons": {},
               "mismatches": []}
    page = render_html(type("R", (), {"summary": summary, "decisions": pd.DataFrame()})())
    assert parse(page).errors == []


def test_without_the_matches_the_seq_chart_says_what_it_shows(replay):
    kept = replay.decisions[replay.decisions["verdict"] != "match"]
    page = render_html(type(replay)(replay.summary, kept))
    assert "Decisions over seq" not in page and "Mismatches and unknowns over seq" in page
    drawn = sum(int(n) for n in re.findall(r"<title>seq -?\d+--?\d+: (\d+) \w+</title>", page))
    assert drawn == len(kept)


def test_without_the_matches_the_seq_axis_starts_at_zero(replay):
    """A lone late mismatch must not fill the chart: the axis runs from seq 0 to the last one."""
    kept = replay.decisions[replay.decisions["verdict"] == "mismatch"].tail(1)
    last = int(kept["seq"].iloc[0])
    page = render_html(type(replay)(replay.summary, kept))
    chart = re.search(r'aria-label="mismatches and unknowns over seq on [^"]*".*?</svg>', page, re.S).group(0)
    bar = re.search(r'<rect x="([\d.]+)" y="[\d.]+" width="([\d.]+)"', chart)
    assert float(bar.group(1)) > 640 / 2 and float(bar.group(2)) < 640 / 10  # column_chart's width
    assert f"seq 0 &#8230; {last}" in page
