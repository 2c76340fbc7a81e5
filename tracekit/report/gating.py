"""The CI sections of every report: baseline counts, gates, load balance per group, and the
what-if comparison, as rich renderables (terminal), HTML fragments and JUnit elements.

Each reads only the summary keys `tracekit.replay.ci` adds (`baseline`, `gates`, `what_if`) and
each group's `balance`; a summary without them gives no section.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping
from html import escape
from typing import Any

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from tracekit.replay.gates import ci_outcome
from tracekit.report.view import describe_decision, format_flow, format_sk

__all__ = ["balance_line", "baseline_line", "gate_headline", "terminal_sections", "html_sections",
           "html_balance", "junit_gates", "what_if_lines"]


def balance_line(group: Mapping[str, Any]) -> str:
    """``balance: max 7 / mean 5.67 = 1.24x over 3 sockets; chi-square 0.82, p = 0.66``."""
    b = group.get("balance") or {}
    if not b.get("total"):
        return "balance: no decided load"
    text = (f"balance: max {b['max']} / mean {b['mean']:g} = {b['max_over_mean']:g}x "
            f"over {b['sockets']} sockets")
    if b.get("chi2") is not None:
        text += f"; chi-square {b['chi2']:g}, p = {b['p_value']:.3g}"
    if b.get("membership_changed"):
        text += " (membership changed under load)"
    return text


def baseline_line(summary: Mapping[str, Any]) -> str | None:
    b = summary.get("baseline")
    if b is None:
        return None
    return (f"baseline {b.get('path')}: {b['new']} new, {b['known']} known, "
            f"{b['fixed']} fixed")


def gate_headline(summary: Mapping[str, Any]) -> tuple[bool, str] | None:
    """What CI decides, for the headline under the verdict: (passed, words), or None when the
    replay had no baseline and no gate (its verdict is then the whole story). Decided by
    `ci_outcome`, as `Replay.exit_code` is."""
    b, gates = summary.get("baseline"), summary.get("gates") or []
    if b is None and not gates:
        return None
    outcome = ci_outcome(summary)
    new, failed = outcome.counted, outcome.failed
    words = []
    if b is not None:
        words.append(f"{new} new mismatch{'es' * (new != 1)} ({b['known']} known, {b['fixed']} fixed)")
    elif new:
        words.append(f"{new} mismatch{'es' * (new != 1)}")
    if gates:
        words.append(f"gate{'s' * (len(failed) != 1)} {', '.join(failed)} failed" if failed
                     else f"{len(gates)} gate{'s' * (len(gates) != 1)} passed")
    passed = outcome.passed
    return passed, ("CI PASS: " if passed else "CI FAIL: ") + "; ".join(words)


def _gate_lines(summary: Mapping[str, Any]) -> list[tuple[bool, str]]:
    lines = []
    for gate in summary.get("gates") or []:
        if gate["passed"]:
            lines.append((True, f"gate {gate['gate']} passed (value {gate['value']})"))
        lines += [(False, f"gate {gate['gate']} FAILED: {message}") for message in gate["failures"]]
    return lines


def what_if_lines(summary: Mapping[str, Any]) -> list[str]:
    """The what-if comparison in plain lines (terminal and JUnit)."""
    w = summary.get("what_if")
    if w is None:
        return []
    resets, migrations = w["resets"], w["migrations"]
    lines = [
        f"what if {', '.join(w['changes'])}: {w['differ']} of {w['decisions']} decisions would "
        f"differ from what was observed ({w['moved']} moved by the change, {w['unknown']} unknown)",
        f"resets: {resets['observed']} observed, {resets['avoided']} would have been avoided, "
        f"{resets['added']} added; migrations: {migrations['migrated']} migrated, "
        f"{migrations['reset']} reset",
    ]
    lines += [f"  {kind}: {n}" for kind, n in w["outcomes"].items()]
    for change in w.get("applied") or []:
        state = "applied" if change["applied"] else "not applied (no such socket)"
        lines.append(f"  {change['change']} on {change['host']}: {state} at {change['at']} "
                     f"(sk {change['sk']})")
    for group in w["groups"]:
        load = ", ".join(f"{format_sk(sk)} {group['observed_load'].get(sk, 0)} -> {n}"
                         for sk, n in _union(group["observed_load"], group["load"]))
        lines.append(f"  {group['host']} {group['group']}: load observed -> what-if: {load}; "
                     f"resets {group['resets']}; {balance_line(group)}")
    for move in w["moves"]:
        flow = format_flow(move)
        lines.append(f"  {move['change']}: {move['host']} seq {move['seq']} {move['event']}"
                     f"{' ' + flow if flow else ''}: observed {format_sk(move['observed'])}, "
                     f"what-if {format_sk(move['what_if'])}")
    return lines


def _union(observed: Mapping[str, int], what_if: Mapping[str, int]) -> list[tuple[str, int]]:
    keys = sorted(set(observed) | set(what_if), key=int)
    return [(sk, int(what_if.get(sk, 0))) for sk in keys]


def terminal_sections(summary: Mapping[str, Any]) -> list[RenderableType]:
    """Baseline, gates and what-if, for `render_replay`."""
    parts: list[RenderableType] = []
    line = baseline_line(summary)
    if line is not None:
        b = summary["baseline"]
        parts.append(Text("\n" + line, style="bold red" if b["new"] else "bold green"))
    gates = _gate_lines(summary)
    if gates:
        parts.append(Text("\nGates", style="bold"))
        parts += [Text(text, style="green" if ok else "bold red") for ok, text in gates]
    lines = what_if_lines(summary)
    if lines:
        table = Table(box=box.SIMPLE_HEAD, show_header=False)
        table.add_column()
        for text in lines[2:]:
            table.add_row(text.strip())
        parts.append(Group(Text("\nWhat if", style="bold"), Text(lines[0]), Text(lines[1]), table))
    return parts


def html_balance(group: Mapping[str, Any]) -> str:
    return f"<p>{escape(balance_line(group))}</p>" if group.get("balance") else ""


def html_sections(summary: Mapping[str, Any]) -> str:
    """Baseline, gates and what-if as HTML, for `render_fragment`."""
    parts = []
    line = baseline_line(summary)
    if line is not None:
        parts.append(f"<h2>Baseline</h2>\n<p>{escape(line)}</p>")
        fixed = summary["baseline"].get("fixed_divergences") or []
        if fixed:
            items = "".join(f"<li><code>{escape(describe_decision(dict(f, seq='?')))}</code></li>"
                            for f in fixed)
            parts.append(f"<p>fixed (in the baseline, no longer mismatched):</p><ul>{items}</ul>")
    gates = _gate_lines(summary)
    if gates:
        items = "".join(f'<li style="color: {"#2e7d32" if ok else "#c62828"}">{escape(text)}</li>'
                        for ok, text in gates)
        parts.append(f"<h2>Gates</h2>\n<ul>{items}</ul>")
    lines = what_if_lines(summary)
    if lines:
        parts.append("<h2>What if</h2>\n<pre>" + escape("\n".join(lines)) + "</pre>")
    return "\n".join(parts)


def junit_gates(summary: Mapping[str, Any]) -> ET.Element | None:
    """A testsuite `tracekit gates` with one testcase per gate (failing when the gate failed)
    and the what-if comparison in its system-out; None when neither was asked for."""
    gates, lines = summary.get("gates") or [], what_if_lines(summary)
    if not gates and not lines:
        return None
    suite = ET.Element("testsuite", name="tracekit gates")
    for gate in gates:
        case = ET.SubElement(suite, "testcase", classname="tracekit.gates", name=gate["gate"])
        if not gate["passed"]:
            failure = ET.SubElement(case, "failure", message=gate["failures"][0], type="gate")
            failure.text = "\n".join(gate["failures"])
    if lines:
        ET.SubElement(suite, "system-out").text = "\n".join(lines)
    return suite
