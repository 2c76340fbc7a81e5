"""The JUnit XML report, for CI systems: a testsuite per host, a testcase per reuseport group.

A group with mismatches fails, listing them with their explanations; a group whose every decision
was unknown is skipped; unknown decisions of any group are counted in its system-out. No times and
no timestamps, so the same replay gives the same bytes.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping
from typing import Any

from tracekit.report.gating import balance_line, junit_gates
from tracekit.report.view import ReportView, count_reasons, describe_decision, view_of

__all__ = ["render_junit"]


def render_junit(replay: Any) -> bytes:
    """JUnit XML (UTF-8 bytes with an XML declaration) for a `Replay` or a summary dict."""
    view = view_of(replay)
    summary = view.summary
    root = ET.Element("testsuites", name="tracekit replay")
    groups_by_host: dict[str, list[Mapping[str, Any]]] = {}
    for group in summary.get("groups") or []:
        groups_by_host.setdefault(str(group.get("host")), []).append(group)
    for host in sorted(set(summary.get("hosts") or {}) | set(groups_by_host)):
        suite = ET.SubElement(root, "testsuite", name=host)
        cases = [_testcase(view, group) for group in groups_by_host.get(host, [])]
        suite.extend(cases)
        _count(suite, cases)
    gates = junit_gates(summary)
    if gates is not None:
        _count(gates, list(gates.iter("testcase")))
        root.append(gates)
    _count(root, list(root.iter("testcase")))
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"


def _count(element: ET.Element, cases: list[ET.Element]) -> None:
    element.set("tests", str(len(cases)))
    element.set("failures", str(sum(case.find("failure") is not None for case in cases)))
    element.set("errors", "0")
    element.set("skipped", str(sum(case.find("skipped") is not None for case in cases)))


def _testcase(view: ReportView, group: Mapping[str, Any]) -> ET.Element:
    host, label = str(group.get("host")), str(group.get("group"))
    case = ET.Element("testcase", classname=f"tracekit.{host}", name=label)
    mismatched, unknown = int(group.get("mismatched", 0)), int(group.get("unknown", 0))
    known: list = []
    if view.summary.get("baseline") is not None and mismatched:
        # against a baseline only new mismatches fail; the known ones are listed in system-out
        records = [r for r in view.mismatches() if r.get("host") == host and r.get("group") == label]
        known = [r for r in records if r.get("baseline") == "known"]
        mismatched -= len(known)
    if mismatched:
        records = view.group_records(host, label, "mismatch") or []
        records = [r for r in records if r.get("baseline") != "known"]
        message = f"{mismatched} of {int(group.get('decisions', 0))} decisions mismatched"
        if view.summary.get("baseline") is not None:
            message = f"{mismatched} new mismatches ({len(known)} known in the baseline)"
        failure = ET.SubElement(case, "failure", message=message, type="mismatch")
        lines = [f"{describe_decision(r)} [{r.get('reason')}]\n  {r.get('explanation') or ''}".rstrip()
                 for r in records]
        if len(records) < mismatched:
            lines.append(f"({mismatched - len(records)} more not in the summary; see --results)")
        failure.text = "\n".join(lines)
    elif unknown and unknown == int(group.get("decisions", 0)):
        ET.SubElement(case, "skipped", message=f"every decision unknown ({_decisions(unknown)})")
    _balance_properties(case, group)
    out = [_unknown_text(view, host, label, unknown)] if unknown else []
    out += [f"known (baseline): {describe_decision(r)} [{r.get('reason')}]" for r in known]
    if out:
        ET.SubElement(case, "system-out").text = "\n".join(out)
    return case


def _balance_properties(case: ET.Element, group: Mapping[str, Any]) -> None:
    """The group's load balance as testcase properties (`balance`: the sentence; then figures)."""
    figures = group.get("balance")
    if not figures:
        return
    properties = ET.Element("properties")
    ET.SubElement(properties, "property", name="balance", value=balance_line(group))
    for key in ("max_over_mean", "chi2", "p_value"):
        if figures.get(key) is not None:
            ET.SubElement(properties, "property", name=f"balance.{key}", value=f"{figures[key]:g}")
    case.insert(0, properties)


def _unknown_text(view: ReportView, host: str, label: str, unknown: int) -> str:
    records = view.group_records(host, label, "unknown")
    if records is None:
        return f"unknown: {_decisions(unknown)}"
    reasons = ", ".join(f"{reason}: {n}" for reason, n in count_reasons(records).items())
    return f"unknown: {_decisions(unknown)} ({reasons})"


def _decisions(n: int) -> str:
    return f"{n} decision" if n == 1 else f"{n} decisions"
