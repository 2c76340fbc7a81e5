"""The HTML report: one self-contained page (inline CSS and SVG), also `Replay._repr_html_`.

Nothing on the page comes from the clock or the machine: the same replay gives the same bytes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from html import escape
from typing import Any

from tracekit.report.gating import gate_headline, html_balance, html_sections
from tracekit.report.svg import Bar, Column, Segment, bar_chart, column_chart
from tracekit.report.membership import group_key
from tracekit.report.timeline_chart import membership_html
from tracekit.report.view import (
    ReportView,
    busiest_gone,
    split_groups,
    format_flow,
    format_sk,
    ordered_load,
    rank_counts,
    view_of,
)

__all__ = ["render_html", "render_fragment", "VERDICT_COLORS"]

VERDICT_COLORS = {"match": "#2e7d32", "mismatch": "#c62828", "unknown": "#f9a825"}
_SECTION_COLORS = {"live": "#1565c0", "closed": "#8e24aa", "gone": "#9e9e9e"}
_COUNT_COLUMNS = ("decisions", "matched", "mismatched", "unknown")
_SEQ_BINS = 60
MAX_TIMELINES = 24

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 72em; color: #222; }
.tracekit-report code, .tracekit-report pre, .tracekit-report td.num { font-family: ui-monospace, monospace; }
.tracekit-report table { border-collapse: collapse; margin: 0.5em 0 1em; }
.tracekit-report th, .tracekit-report td { border-bottom: 1px solid #ddd; padding: 0.2em 0.6em; text-align: left; vertical-align: top; }
.tracekit-report p.axis { color: #666; font-size: 0.85em; margin-top: 0; }
.tracekit-report td.num, .tracekit-report th.num { text-align: right; }
.tracekit-report .verdict { display: inline-block; padding: 0.3em 0.8em; border-radius: 0.3em; color: #fff; font-size: 1.6em; font-weight: bold; }
.tracekit-report .group { border-left: 4px solid #1565c0; padding-left: 1em; margin: 1em 0; }
.tracekit-report pre.explanation { white-space: pre-wrap; margin: 0; }
.tracekit-report td pre, .tracekit-report td code { overflow-wrap: anywhere; }
.tracekit-report pre { white-space: pre-wrap; overflow-wrap: anywhere; }
.tracekit-report .dim { color: #777; }
.tracekit-report svg { max-width: 100%; height: auto; }
.tracekit-report ol.timeline { font-family: ui-monospace, monospace; font-size: 0.85em; margin: 0.3em 0 0.8em; }
""".strip()


def render_html(replay: Any, *, max_mismatches: int = 200) -> str:
    """A complete HTML page reporting a `Replay` (or a summary dict)."""
    view = view_of(replay)
    title = f"tracekit replay: {view.summary.get('trace', {}).get('path', '')}"
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f"<title>{escape(title)}</title>",
        f"<style>\n{_CSS}\n</style>",
        "</head>",
        "<body>",
        render_fragment(view, max_mismatches=max_mismatches),
        "</body>",
        "</html>",
        "",
    ])


def render_fragment(replay: Any, *, max_mismatches: int = 200) -> str:
    """The report as a ``<div>`` without page chrome (what a notebook cell shows)."""
    view = view_of(replay)
    parts = [
        '<div class="tracekit-report">',
        _header(view),
        _provenance(view.summary),
        html_sections(view.summary),
        _verdict_chart(view.summary),
        *_seq_charts(view),
        _hosts(view.summary),
        *_groups(view),
        _mismatches(view, max_mismatches),
        _unknown_reasons(view.summary),
        "</div>",
    ]
    return "\n".join(part for part in parts if part)


def _table(header: Sequence[str], rows: Iterable[Sequence[str]], numeric: Sequence[bool]) -> str:
    """A table whose cells are already-escaped HTML."""
    def cell(tag: str, text: str, is_num: bool) -> str:
        return f'<{tag} class="num">{text}</{tag}>' if is_num else f"<{tag}>{text}</{tag}>"

    lines = ["<table>", "<tr>" + "".join(cell("th", escape(h), n) for h, n in zip(header, numeric)) + "</tr>"]
    lines += ["<tr>" + "".join(cell("td", c, n) for c, n in zip(row, numeric)) + "</tr>" for row in rows]
    lines.append("</table>")
    return "\n".join(lines)


def _header(view: ReportView) -> str:
    summary = view.summary
    color = VERDICT_COLORS.get(view.verdict, VERDICT_COLORS["unknown"])
    counts = ", ".join(f"{int(summary.get(key, 0))} {key}" for key in _COUNT_COLUMNS[1:])
    gate = gate_headline(summary)
    ci = "" if gate is None else (
        f'\n<p><span class="verdict" style="background: '
        f'{VERDICT_COLORS["match" if gate[0] else "mismatch"]}">{escape(gate[1])}</span></p>')
    return (
        "<h1>tracekit replay</h1>\n"
        f'<p><span class="verdict" style="background: {color}">{escape(view.verdict.upper())}</span> '
        f"{int(summary.get('decisions', 0))} decisions: {escape(counts)}</p>{ci}"
    )


def _provenance(summary: Mapping[str, Any]) -> str:
    trace = summary.get("trace") or {}
    profile = summary.get("profile") or {}
    rows = [
        ("trace", trace.get("path")), ("format", trace.get("format")),
        ("source", trace.get("source")), ("kernel", trace.get("kernel")),
        ("profile", profile.get("name")), ("profile chosen by", profile.get("chosen_by")),
        ("profile switches", "; ".join(profile.get("switches") or ()) or None),
    ]
    rows += sorted((key, value) for key, value in (trace.get("metadata") or {}).items())
    return _table(
        ("", ""),
        ((escape(key), f"<code>{escape(str(value))}</code>") for key, value in rows if value is not None),
        (False, False),
    )


def _verdict_chart(summary: Mapping[str, Any]) -> str:
    bars = [
        Bar(verdict, int(summary.get(key, 0)), VERDICT_COLORS[verdict])
        for verdict, key in (("match", "matched"), ("mismatch", "mismatched"), ("unknown", "unknown"))
    ]
    return "<h2>Decisions per verdict</h2>\n" + bar_chart(bars, title="decisions per verdict")


def _seq_charts(view: ReportView) -> list[str]:
    """Per host, decisions over seq as stacked columns by verdict (needs the decision table).

    A table without the matches (a replay run without results) still shows where the mismatches
    and unknowns fall, under a title that says so.
    """
    table = view.decisions
    if table is None or not len(table):
        return []
    what = "Decisions" if view.complete else "Mismatches and unknowns"
    parts = [f"<h2>{what} over seq</h2>"]
    for host in sorted(set(table["host"].astype(str))):
        rows = table.loc[table["host"].astype(str) == host, ["seq", "verdict"]]
        seqs = [int(s) for s in rows["seq"]]
        # without the matches, draw from seq 0 so a lone mismatch shows where it fell, not a block
        low = min(seqs) if view.complete else min(0, min(seqs))
        columns = _seq_columns(seqs, [str(v) for v in rows["verdict"]], start=low)
        parts.append(f"<h3>{escape(host)}</h3>")
        parts.append(column_chart(columns, title=f"{what.lower()} over seq on {host}"))
        parts.append(f'<p class="axis">seq {low} &#8230; {max(seqs)}</p>')
    return parts


def _seq_columns(seqs: Sequence[int], verdicts: Sequence[str], start: int | None = None) -> list[Column]:
    low = min(seqs) if start is None else min(start, min(seqs))
    high = max(seqs)
    span = high - low + 1
    bins = min(_SEQ_BINS, span)
    counts = [dict.fromkeys(VERDICT_COLORS, 0) for _ in range(bins)]
    for seq, verdict in zip(seqs, verdicts):
        counts[(seq - low) * bins // span][verdict if verdict in VERDICT_COLORS else "unknown"] += 1
    columns = []
    for index, count in enumerate(counts):
        first = low + -(-index * span // bins)
        last = low + -(-(index + 1) * span // bins) - 1
        columns.append(Column(
            label=f"seq {first}-{last}",
            segments=tuple(Segment(n, VERDICT_COLORS[v], v) for v, n in count.items()),
        ))
    return columns


def _hosts(summary: Mapping[str, Any]) -> str:
    hosts = summary.get("hosts") or {}
    if not hosts:
        return ""
    rows = ([escape(host)] + [str(int(hosts[host].get(c, 0))) for c in _COUNT_COLUMNS] for host in sorted(hosts))
    return "<h2>Hosts</h2>\n" + _table(("host", *_COUNT_COLUMNS), rows, (False, True, True, True, True))


def _groups(view: ReportView) -> list[str]:
    """Each group's section; the first `MAX_TIMELINES` groups with a timeline get its chart."""
    parts, charted, skipped = [], 0, 0
    detailed, rest = split_groups(view.summary.get("groups") or [])
    frames = view.group_timelines(map(group_key, detailed))
    for group in detailed:
        key = group_key(group)
        rows = frames.get(key)
        timeline = ""
        if rows is not None:
            if charted < MAX_TIMELINES:
                timeline = membership_html(rows, start=0, end=(view.ends or {}).get(key[0], 0),
                                           title=f"membership of {key[1]} on {key[0]} over seq")
                charted += 1
            else:
                skipped += 1
        parts.append(_group(group, timeline))
    if skipped:
        parts.append(f'<p class="dim">Timelines of {skipped} more groups are not drawn; '
                     f"<code>Replay.timeline()</code> has every change.</p>")
    if rest:
        rows = ([escape(str(g.get("host"))), f"<code>{escape(str(g.get('group')))}</code>",
                 *(str(int(g.get(c, 0))) for c in _COUNT_COLUMNS), str(len(g.get("socks") or []))]
                for g in rest)
        parts.append(f"<h3>{len(rest)} more groups</h3>\n" + _table(
            ("host", "group", *_COUNT_COLUMNS, "live sockets"), rows,
            (False, False, True, True, True, True, True)))
    return parts


def _group(group: Mapping[str, Any], timeline: str = "") -> str:
    host, label = str(group.get("host")), str(group.get("group"))
    details = [f"reuseport_id {group.get('reuseport_id')}"]
    if group.get("prog"):
        details.append(f"prog {group['prog']}")
    counts = ", ".join(f"{int(group.get(c, 0))} {c}" for c in _COUNT_COLUMNS)
    migrations = group.get("migrations") or {}
    live = " ".join(f"[{i}]&nbsp;{escape(format_sk(sk))}" for i, sk in enumerate(group.get("socks") or []))
    closed = " ".join(escape(format_sk(sk)) for sk in group.get("closed") or [])
    rows, hidden = busiest_gone(ordered_load(group))
    bars = [
        Bar(format_sk(sk), n, _SECTION_COLORS[section], "" if section == "live" else section)
        for sk, n, section in rows
    ]
    if hidden:
        bars.append(Bar(f"{len(hidden)} more", sum(n for _, n, _ in hidden),
                        _SECTION_COLORS["gone"], "gone"))
    return "\n".join([
        '<div class="group">',
        f"<h3>{escape(host)} &middot; <code>{escape(label)}</code> "
        f'<span class="dim">{escape("  ".join(details))}</span></h3>',
        f"<p>{escape(counts)}; migrations: {int(migrations.get('migrated', 0))} migrated, "
        f"{int(migrations.get('reset', 0))} reset</p>",
        f"<p>socks: <code>{live or '(none)'}</code><br>closed: <code>{closed or '(none)'}</code></p>",
        html_balance(group),
        bar_chart(bars, title=f"load per socket in {label} on {host}") if bars else "",
        timeline,
        "</div>",
    ])


def _mismatches(view: ReportView, limit: int) -> str:
    total = int(view.summary.get("mismatched", 0))
    if not total:
        return ""
    records = view.mismatches(limit)
    rows = (
        [escape(str(r.get("host"))), str(r.get("seq")), escape(str(r.get("event"))),
         f"<code>{escape(format_flow(r))}</code>", f"<code>{escape(str(r.get('group') or ''))}</code>",
         escape(format_sk(r.get("expected"))), escape(format_sk(r.get("observed"))),
         escape(str(r.get("reason")) + (f" ({r['baseline']})" if r.get("baseline") else "")),
         f'<pre class="explanation">{escape(str(r.get("explanation") or ""))}</pre>']
        for r in records
    )
    header = ("host", "seq", "event", "flow", "group", "expected", "observed", "reason", "explanation")
    return (
        f"<h2>Mismatches (first {len(records)} of {total})</h2>\n"
        + _table(header, rows, (False, True) + (False,) * 7)
    )


def _unknown_reasons(summary: Mapping[str, Any]) -> str:
    reasons = rank_counts(summary.get("unknown_reasons") or {})
    if not reasons:
        return ""
    rows = ([f"<code>{escape(reason)}</code>", str(n)] for reason, n in reasons.items())
    return "<h2>Unknown decisions by reason</h2>\n" + _table(("reason", "decisions"), rows, (False, True))
