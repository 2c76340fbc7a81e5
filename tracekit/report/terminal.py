"""The terminal report: one rich renderable describing a replay.

Only a Console writes; this module builds the renderable (`Replay.__rich__` returns it), so the same
report prints to a terminal, records to text in tests, or exports through rich's own HTML/SVG.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich import box
from rich.console import Group, RenderableType
from rich.padding import Padding
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from tracekit.report.membership import describe_step, elided_steps, group_key
from tracekit.report.gating import balance_line, gate_headline, terminal_sections
from tracekit.report.view import (
    ReportView,
    busiest_gone,
    split_groups,
    describe_decision,
    format_sk,
    ordered_load,
    rank_counts,
    view_of,
)

__all__ = ["VERDICT_STYLES", "render_replay", "verdict_style"]

VERDICT_STYLES = {"match": "green", "mismatch": "red"}
_OTHER_VERDICT_STYLE = "yellow"
_BAR_WIDTH = 24
_COUNT_COLUMNS = ("decisions", "matched", "mismatched", "unknown")
TABLE_ROWS = 40
"""Rows of the hosts table and of the more-groups table a terminal shows: past that, the rows with
the most mismatches, then unknowns (a fleet's 600 hosts stay readable, and laying out thousands
of rows cost a fleet replay seconds); every row is in `--json` and `--html`."""


def render_replay(replay: Any, *, max_mismatches: int = 10, explain: bool = True) -> RenderableType:
    """The report of a `Replay` (or of a summary dict) as a rich renderable.

    ``max_mismatches`` caps the mismatches listed; ``explain`` adds each one's explanation.
    """
    view = view_of(replay)
    parts: list[RenderableType] = [_verdict_panel(view), _provenance(view.summary)]
    parts += terminal_sections(view.summary)
    parts += _hosts(view.summary)
    groups = view.summary.get("groups") or []
    if groups:
        parts.append(Text("\nGroups", style="bold"))
        detailed, rest = split_groups(groups)
        frames = view.group_timelines(map(group_key, detailed))
        parts += [_group(group, frames.get(group_key(group))) for group in detailed]
        if rest:
            parts.append(_more_groups(rest))
    parts += _mismatches(view, max_mismatches, explain)
    parts += _unknown_reasons(view.summary)
    return Group(*parts)


def verdict_style(verdict: str) -> str:
    return VERDICT_STYLES.get(verdict, _OTHER_VERDICT_STYLE)


def _verdict_panel(view: ReportView) -> Panel:
    summary = view.summary
    headline = Text(view.verdict.upper().replace("-", " "), style=f"bold {verdict_style(view.verdict)}")
    counts = Text(
        f"{summary.get('decisions', 0)} decisions: {summary.get('matched', 0)} matched, "
        f"{summary.get('mismatched', 0)} mismatched, {summary.get('unknown', 0)} unknown"
    )
    lines: list[RenderableType] = [headline, counts]
    border = verdict_style(view.verdict)
    gate = gate_headline(summary)
    if gate is not None:  # with a baseline or gates, CI's decision is the headline's second half
        border = "green" if gate[0] else "red"
        lines.append(Text(gate[1], style=f"bold {border}"))
    return Panel(
        Group(*lines),
        border_style=border,
        box=box.HEAVY,
        expand=False,
        padding=(0, 2),
    )


def _provenance(summary: Mapping[str, Any]) -> Text:
    trace = summary.get("trace") or {}
    profile = summary.get("profile") or {}
    details = [
        f"{label} {trace[key]}" for key, label in (("source", "source"), ("kernel", "kernel"))
        if trace.get(key)
    ]
    line = Text("trace ", style="dim")
    line.append(str(trace.get("path", "?")), style="bold")
    if details:
        line.append(f" ({', '.join(details)})")
    line.append("\nprofile ", style="dim")
    line.append(str(profile.get("name", "?")), style="bold")
    if profile.get("chosen_by"):
        line.append(f" (chosen by {profile['chosen_by']})")
    if profile.get("switches"):
        line.append("\nswitches ", style="dim")
        line.append("; ".join(profile["switches"]))
    return line


def _counts_row(counts: Mapping[str, Any]) -> list[Text]:
    cells = []
    for column in _COUNT_COLUMNS:
        value = int(counts.get(column, 0))
        style = {"mismatched": "red", "unknown": "yellow"}.get(column, "") if value else "dim"
        cells.append(Text(str(value), style=style))
    return cells


def _hosts(summary: Mapping[str, Any]) -> list[RenderableType]:
    hosts = summary.get("hosts") or {}
    if not hosts:
        return []
    shown = _worst([dict(hosts[host], host=host) for host in sorted(hosts)])
    table = Table(title="\nHosts", title_justify="left", title_style="bold", box=box.SIMPLE_HEAD)
    table.add_column("host")
    for column in _COUNT_COLUMNS:
        table.add_column(column, justify="right")
    for host in shown:
        table.add_row(Text(host["host"]), *_counts_row(host))
    return [table, *_left_out(len(hosts), len(shown), "hosts")]


def _worst(rows: list[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """`rows` when there are at most `TABLE_ROWS`; else the `TABLE_ROWS` with the most mismatches,
    then unknowns (ties in the given order), in the given order."""
    if len(rows) <= TABLE_ROWS:
        return rows
    ranked = sorted(range(len(rows)), key=lambda i: (-int(rows[i].get("mismatched", 0)),
                                                     -int(rows[i].get("unknown", 0)), i))
    return [rows[i] for i in sorted(ranked[:TABLE_ROWS])]


def _left_out(total: int, shown: int, what: str) -> list[Text]:
    if total == shown:
        return []
    return [Text(f"{shown} of {total} {what} shown (the most mismatches, then unknowns); "
                 "every one is in --json and --html", style="dim")]


def _more_groups(groups: list[Mapping[str, Any]]) -> RenderableType:
    """One line per group past the detailed ones (at most `TABLE_ROWS`)."""
    shown = _worst(groups)
    table = Table(title=f"{len(groups)} more groups", title_justify="left", title_style="bold",
                  box=box.SIMPLE_HEAD)
    table.add_column("host")
    table.add_column("group")
    for column in _COUNT_COLUMNS:
        table.add_column(column, justify="right")
    table.add_column("live", justify="right")
    for group in shown:
        table.add_row(str(group.get("host")), str(group.get("group")), *_counts_row(group),
                      str(len(group.get("socks") or [])))
    return Group(table, *_left_out(len(groups), len(shown), "groups"))


def _group(group: Mapping[str, Any], timeline: Any = None) -> RenderableType:
    title = Text(f"{group.get('host')} · {group.get('group')}", style="bold")
    details = [f"reuseport_id {group.get('reuseport_id')}"]
    if group.get("prog"):
        details.append(f"prog {group['prog']}")
    title.append("  " + "  ".join(details), style="dim")
    counts = Text("  ".join(
        f"{int(group.get(column, 0))} {column}" for column in _COUNT_COLUMNS
    ))
    migrations = group.get("migrations") or {}
    if migrations.get("migrated") or migrations.get("reset"):
        counts.append(
            f"   migrations: {int(migrations.get('migrated', 0))} migrated, "
            f"{int(migrations.get('reset', 0))} reset"
        )
    if group.get("balance"):
        counts.append(f"   {balance_line(group)}", style="dim")
    body = [counts, _load_table(group)]
    if timeline is not None:
        body.append(_timeline(timeline))
    return Group(title, Padding(Group(*body), (0, 0, 1, 2)))


_TIMELINE_HEAD, _TIMELINE_TAIL = 3, 5


def _timeline(rows: Any) -> Text:
    """The group's changes, one line per seq; a long history keeps its first and last lines."""
    head, hidden, tail, total = elided_steps(rows, _TIMELINE_HEAD, _TIMELINE_TAIL)
    text = Text(f"timeline ({total} change{'s' if total != 1 else ''})", style="dim")
    for step in head:
        text.append("\n" + describe_step(step, compact=True))
    if hidden:
        text.append(f"\n... {hidden} more ...", style="dim")
    for step in tail:
        text.append("\n" + describe_step(step, compact=True))
    return text


def _load_table(group: Mapping[str, Any]) -> RenderableType:
    rows = ordered_load(group)
    if not rows:
        return Text("no sockets", style="dim")
    peak = max(n for _, n, _ in rows) or 1
    table = Table.grid(padding=(0, 1))
    table.add_column(justify="right")  # array slot
    table.add_column()  # socket
    table.add_column()  # bar
    table.add_column(justify="right")  # decisions expected there
    table.add_column(style="dim")  # section
    rows, hidden = busiest_gone(rows)
    slot = 0
    for sk, n, section in rows:
        label = f"[{slot}]" if section == "live" else ""
        slot += section == "live"
        cells = int(round(_BAR_WIDTH * n / peak)) or (1 if n else 0)
        bar = Text("█" * cells, style="cyan" if section == "live" else "magenta")
        bar.append("·" * (_BAR_WIDTH - cells), style="dim")
        table.add_row(label, format_sk(sk), bar, str(n), "" if section == "live" else section)
    if hidden:
        table.add_row("", f"{len(hidden)} more", "", str(sum(n for _, n, _ in hidden)), "gone")
    return table


def _mismatches(view: ReportView, limit: int, explain: bool) -> list[RenderableType]:
    total = int(view.summary.get("mismatched", 0))
    if not total or limit <= 0:
        return []
    records = view.mismatches(limit)
    heading = Text(f"\nMismatches (first {len(records)} of {total})", style="bold red")
    items: list[RenderableType] = [heading]
    for number, record in enumerate(records, 1):
        line = Text(f"{number}. ", style="bold")
        if record.get("baseline"):
            line.append(f"{record['baseline'].upper()} ",
                        style="bold red" if record["baseline"] == "new" else "dim")
        line.append(describe_decision(record))
        line.append(f"  [{record.get('reason')}]", style="dim")
        items.append(line)
        detail = [f"group {record.get('group')}"] if record.get("group") else []
        if explain and record.get("explanation"):
            detail.append(str(record["explanation"]))
        if detail:
            items.append(Padding(Text("\n".join(detail)), (0, 0, 0, 3)))
    return [Group(*items)]


def _unknown_reasons(summary: Mapping[str, Any]) -> list[RenderableType]:
    reasons = summary.get("unknown_reasons") or {}
    if not reasons:
        return []
    ranked = rank_counts(reasons)
    table = Table(
        title="\nUnknown decisions by reason", title_justify="left", title_style="bold",
        box=box.SIMPLE_HEAD,
    )
    table.add_column("reason")
    table.add_column("decisions", justify="right")
    for reason, n in ranked.items():
        table.add_row(reason, Text(str(int(n)), style="yellow"))
    return [table]
