"""Scenarios: what the recorder does, as data. A scenario file is TOML:

    name = "rolling-restart"
    description = "one line for `tracekit record --list`"
    origin = "tools/testing/selftests/..."        # optional: what it ports

    [[step]]                                      # steps run in order
    op = "open"                                   # socket + SO_REUSEPORT + options + bind (+ listen)
    sock = "a"  |  socks = ["a", "b"]
    proto = "tcp"; addr = "127.0.0.1"; port = 8000

    [[expect]]                                    # checked against the kernel's answer
    step = "phase1"; cycle = ["a", "b"]

Steps (op = ...): sysctl, socket, setsockopt, bind, listen, connect, shutdown, close, open,
clients (TCP connections), datagrams (UDP), accept. See STEP_FIELDS for each op's fields.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tracekit.errors import TracekitError

STEP_FIELDS: dict[str, set[str]] = {
    "sysctl": {"name", "value"},
    "socket": {"sock", "socks", "proto", "family"},
    "setsockopt": {"sock", "socks", "name", "value", "prog"},
    "bind": {"sock", "socks", "addr", "port"},
    "listen": {"sock", "socks", "backlog"},
    "connect": {"sock", "socks", "addr", "port"},
    "shutdown": {"sock", "socks", "how", "cpu"},
    "close": {"sock", "socks", "cpu"},
    "open": {"sock", "socks", "proto", "family", "addr", "port", "options", "reuseport", "listen", "backlog"},
    "clients": {"addr", "port", "count", "cpu"},
    "datagrams": {"addr", "port", "count", "cpu", "payload", "src_port", "src_ports"},
    "accept": {"sock", "socks", "count"},
}
EXPECT_KINDS = ("to", "cycle", "by_cpu", "only", "ret", "mib", "resets")


class ScenarioError(TracekitError):
    """A scenario file that cannot be run as written."""


@dataclass(frozen=True)
class Step:
    op: str
    args: dict[str, Any]
    label: str | None = None

    def socks(self) -> list[str]:
        if "socks" in self.args:
            return list(self.args["socks"])
        return [self.args["sock"]] if "sock" in self.args else []


@dataclass(frozen=True)
class Expectation:
    args: dict[str, Any]

    @property
    def kind(self) -> str:
        return next(k for k in EXPECT_KINDS if k in self.args)


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    steps: tuple[Step, ...]
    expectations: tuple[Expectation, ...] = ()
    origin: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def load_scenario(path: str | Path) -> Scenario:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ScenarioError(f"{path}: no such scenario file") from None
    except tomllib.TOMLDecodeError as err:
        raise ScenarioError(f"{path}: not valid TOML: {err}") from None
    return parse_scenario(data, source=str(path))


def parse_scenario(data: dict[str, Any], *, source: str = "<scenario>") -> Scenario:
    steps = []
    for index, raw in enumerate(data.get("step", []), start=1):
        raw = dict(raw)
        op = raw.pop("op", None)
        label = raw.pop("label", None)
        if op not in STEP_FIELDS:
            raise ScenarioError(f"{source}: step {index}: unknown op {op!r} (one of {', '.join(STEP_FIELDS)})")
        unknown = set(raw) - STEP_FIELDS[op]
        if unknown:
            raise ScenarioError(f"{source}: step {index} ({op}): unknown field(s) {', '.join(sorted(unknown))}")
        steps.append(Step(op, raw, label))
    labels = {s.label for s in steps if s.label}
    expectations = []
    for index, raw in enumerate(data.get("expect", []), start=1):
        if not any(k in raw for k in EXPECT_KINDS):
            raise ScenarioError(f"{source}: expect {index}: needs one of {', '.join(EXPECT_KINDS)}")
        if "mib" not in raw and raw.get("step") not in labels:
            raise ScenarioError(f"{source}: expect {index}: 'step' must name a step label ({raw.get('step')!r} is none)")
        expectations.append(Expectation(dict(raw)))
    if "name" not in data:
        raise ScenarioError(f"{source}: a scenario needs a name")
    return Scenario(
        name=data["name"],
        description=data.get("description", ""),
        steps=tuple(steps),
        expectations=tuple(expectations),
        origin=data.get("origin"),
    )
