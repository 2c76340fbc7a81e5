"""Check a scenario's [[expect]] tables against what the kernel did.

Each expectation names a labelled step and says where its connections/datagrams must end up
(`to`, `cycle`, `by_cpu`, `only`, `resets`) or what its operations must return (`ret`), or names a
kernel MIB counter (`mib`). Destinations are socket names, or "reset"; a flow's destination is
where it was finally observed (after any migration)."""

from __future__ import annotations

import errno

from tracekit.recorder.runner import Capture
from tracekit.recorder.scenario import Expectation, Scenario


def _errno_value(value: int | str) -> int:
    if isinstance(value, str):
        return -getattr(errno, value.lstrip("-")) if value not in ("0", "ok") else 0
    return int(value)


def check_expectations(scenario: Scenario, capture: Capture) -> list[str]:
    """Every expectation the recording broke, as a sentence; empty when all hold."""
    failures = []
    for expectation in scenario.expectations:
        failures += [f"{scenario.name}: {problem}" for problem in _check(expectation, capture)]
    return failures


def _check(expectation: Expectation, capture: Capture) -> list[str]:
    args, outcomes = expectation.args, capture.outcomes
    if expectation.kind == "mib":
        got = capture.mib.get(args["mib"], 0)
        return [] if got == int(args["value"]) else [f"MIB {args['mib']} is {got}, expected {args['value']}"]
    label = args["step"]
    if expectation.kind == "ret":
        want = _errno_value(args["ret"])
        got = outcomes.rets.get(label, [])
        return [] if got and all(r == want for r in got) else [f"step {label!r} returned {got}, expected {want}"]
    flows = outcomes.flows.get(label, [])
    cpus = outcomes.cpus.get(label, [])
    if not flows:
        return [f"step {label!r} sent nothing"]
    problems = []
    for index, (flow, nth) in enumerate(flows):
        where = _where(outcomes, flow, nth)
        want = _wanted(expectation, index, cpus[index])
        if want is not None and where not in want:
            problems.append(f"step {label!r} flow {index} ({flow.raddr}:{flow.rport} on cpu {cpus[index]}) went to {where}, expected {' or '.join(want)}")
    if expectation.kind == "resets":
        resets = sum(_where(outcomes, flow, nth) == "reset" for flow, nth in flows)
        if resets != int(args["resets"]):
            problems.append(f"step {label!r}: {resets} connection(s) reset, expected {args['resets']}")
    return problems


def _where(outcomes, flow, nth: int) -> str:
    delivered = outcomes.delivered.get(flow, [])
    return delivered[nth] if nth < len(delivered) else "nowhere"


def _wanted(expectation: Expectation, index: int, cpu: int) -> list[str] | None:
    args = expectation.args
    if expectation.kind == "to":
        return [args["to"][index]]
    if expectation.kind == "cycle":
        return [args["cycle"][index % len(args["cycle"])]]
    if expectation.kind == "by_cpu":
        return [args["by_cpu"][str(cpu)]]
    if expectation.kind == "only":
        return list(args["only"])
    return None
