"""Gates for CI (`--fail-on`): conditions on a replay's summary that fail the run.

    imbalance>X   a group's busiest socket took more than X times the mean load per socket, and
                  the spread is unlikely to be chance (chi-square p-value below `ALPHA`, so a
                  small group's ordinary unevenness does not trip it)
    resets>N      the kernel reset more than N connections in total
    unknown>X     more than X of the decisions were unknown (a fraction, or a percentage: 5%)

Pure: a gate reads the summary dict (`tracekit.replay.summary.build_summary`) and says why it
failed, in words a CI log can show as they are.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from tracekit.errors import TracekitError

__all__ = ["ALPHA", "GATE_KINDS", "Gate", "CiOutcome", "ci_outcome", "parse_gate", "evaluate_gates"]

ALPHA = 0.01
GATE_KINDS = ("imbalance", "resets", "unknown")
_SPEC = re.compile(r"^\s*(?P<kind>[a-z]+)\s*>\s*(?P<limit>[0-9]+(?:\.[0-9]+)?)(?P<pct>%?)\s*$")


@dataclass(frozen=True)
class Gate:
    kind: str
    limit: float
    spec: str

    def evaluate(self, summary: Mapping[str, Any]) -> dict[str, Any]:
        """{"gate", "passed", "value", "failures": [messages]} for this summary."""
        check = {"imbalance": _imbalance, "resets": _resets, "unknown": _unknown}[self.kind]
        value, failures = check(self.limit, summary)
        return {"gate": self.spec, "passed": not failures, "value": value, "failures": failures}


@dataclass(frozen=True)
class CiOutcome:
    """What CI decides from a summary: the mismatches that count and the gates that failed."""
    counted: int             # with a baseline its new mismatches, else every mismatch
    failed: tuple[str, ...]  # specs of the failed gates, in order

    @property
    def passed(self) -> bool:
        return not self.counted and not self.failed


def ci_outcome(summary: Mapping[str, Any]) -> CiOutcome:
    """With a baseline only new mismatches count; any failed gate fails. `Replay.exit_code` and
    the reports' CI headline both read this, so they cannot disagree."""
    baseline = summary.get("baseline")
    counted = int(baseline["new"] if baseline is not None else summary.get("mismatched", 0))
    failed = tuple(gate["gate"] for gate in summary.get("gates") or () if not gate["passed"])
    return CiOutcome(counted, failed)


def parse_gate(spec: str) -> Gate:
    """`imbalance>1.5`, `resets>0`, `unknown>5%` -> Gate (TracekitError naming the spec)."""
    m = _SPEC.match(spec)
    if not m or m["kind"] not in GATE_KINDS:
        raise TracekitError(
            f"--fail-on {spec!r}: expected KIND>LIMIT with KIND one of {', '.join(GATE_KINDS)} "
            "(imbalance>1.5, resets>0, unknown>5%)")
    limit = float(m["limit"]) / (100 if m["pct"] else 1)
    if m["pct"] and m["kind"] != "unknown":
        raise TracekitError(f"--fail-on {spec!r}: only unknown takes a percentage")
    if m["kind"] == "unknown" and limit > 1:
        raise TracekitError(f"--fail-on {spec!r}: the unknown share is a fraction 0..1 or a percentage")
    return Gate(m["kind"], limit, f"{m['kind']}>{m['limit']}{m['pct']}")


def evaluate_gates(gates: Iterable[Gate], summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [gate.evaluate(summary) for gate in gates]


def _imbalance(limit: float, summary: Mapping[str, Any]) -> tuple[float | None, list[str]]:
    worst: float | None = None
    failures = []
    for group in summary.get("groups") or []:
        figures = group.get("balance") or {}
        ratio, p = figures.get("max_over_mean"), figures.get("p_value")
        if ratio is None or p is None:
            continue
        worst = ratio if worst is None else max(worst, ratio)
        if ratio > limit and p < ALPHA:
            failures.append(
                f"{group['host']} {group['group']}: busiest socket took {figures['max']} of "
                f"{figures['total']} decisions, {ratio:g}x the mean over {figures['sockets']} "
                f"sockets (> {limit:g}); chi-square {figures['chi2']:g}, p = {p:.3g} < {ALPHA:g}"
                + ("; its sockets came and went under load" if figures.get("membership_changed") else ""))
    return worst, failures


def _resets(limit: float, summary: Mapping[str, Any]) -> tuple[int, list[str]]:
    per_group = [(g["host"], g["group"], int(g.get("resets", 0))) for g in summary.get("groups") or []]
    total = sum(n for _, _, n in per_group)
    if total <= limit:
        return total, []
    where = ", ".join(f"{host} {group}: {n}" for host, group, n in per_group if n)
    return total, [f"the kernel reset {total} connections (> {limit:g}): {where}"]


def _unknown(limit: float, summary: Mapping[str, Any]) -> tuple[float, list[str]]:
    decisions = int(summary.get("decisions", 0))
    share = int(summary.get("unknown", 0)) / decisions if decisions else 0.0
    share = float(f"{share:.6g}")
    if share <= limit:
        return share, []
    reasons = ", ".join(f"{r}: {n}" for r, n in sorted((summary.get("unknown_reasons") or {}).items()))
    return share, [f"{summary.get('unknown')} of {decisions} decisions unknown "
                   f"({share:.1%} > {limit:.1%}): {reasons}"]
