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
clients (TCP connections; `src_ports` fixes their source ports), datagrams (UDP), accept, ebpf (attach a built-in eBPF steering
program, `program = "<name>"`, over a sockarray of `socks` in order: tracekit.recorder.steering).
See STEP_FIELDS for each op's fields and REQUIRED_FIELDS for those it cannot do without; `parse_scenario` refuses unknown keys, missing
fields, values of the wrong type or range and sockets used before they are created, naming the
file, the step and the field, so a typo never reaches the kernel.
"""

from __future__ import annotations

import ipaddress
import tomllib
from dataclasses import dataclass
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
    "clients": {"addr", "port", "count", "cpu", "src_ports"},
    "datagrams": {"addr", "port", "count", "cpu", "payload", "src_port", "src_ports"},
    "accept": {"sock", "socks", "count"},
    "ebpf": {"socks", "program"},
}
REQUIRED_FIELDS: dict[str, set[str]] = {
    "sysctl": {"name", "value"},
    "setsockopt": {"name"},
    "bind": {"port"},
    "connect": {"addr", "port"},
    "open": {"port"},
    "clients": {"addr", "port"},
    "datagrams": {"addr", "port"},
    "ebpf": {"socks", "program"},
}
TOP_LEVEL_KEYS = {"name", "description", "origin", "step", "expect"}
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
    source: str = "<scenario>"


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
    created: set[str] = set()
    for index, raw in enumerate(data.get("step", []), start=1):
        raw = dict(raw)
        op = raw.pop("op", None)
        label = raw.pop("label", None)
        if op not in STEP_FIELDS:
            raise ScenarioError(f"{source}: step {index}: unknown op {op!r} (one of {', '.join(STEP_FIELDS)})")
        unknown = set(raw) - STEP_FIELDS[op]
        if unknown:
            raise ScenarioError(f"{source}: step {index} ({op}): unknown field(s) {', '.join(sorted(unknown))}")
        missing = REQUIRED_FIELDS.get(op, set()) - set(raw)
        if op not in ("sysctl", "clients", "datagrams", "ebpf") and not {"sock", "socks"} & set(raw):
            missing.add("sock")
        if missing:
            raise ScenarioError(f"{source}: step {index} ({op}): missing field(s) {', '.join(sorted(missing))}")
        for key, value in raw.items():
            problem = _value_problem(op, key, value)
            if problem:
                raise ScenarioError(f"{source}: step {index} ({op}), field {key!r}: {problem}")
        step = Step(op, raw, label)
        if op in ("socket", "open"):
            created.update(step.socks())
        elif unknown_socks := [name for name in step.socks() if name not in created]:
            raise ScenarioError(f"{source}: step {index} ({op}): socket {unknown_socks[0]!r} is used "
                                "before a socket or open step creates it")
        steps.append(step)
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
    unknown_keys = set(data) - TOP_LEVEL_KEYS
    if unknown_keys:
        raise ScenarioError(f"{source}: unknown key(s) {', '.join(sorted(unknown_keys))} "
                            f"(a scenario has {', '.join(sorted(TOP_LEVEL_KEYS))})")
    return Scenario(
        name=data["name"],
        description=data.get("description", ""),
        steps=tuple(steps),
        expectations=tuple(expectations),
        origin=data.get("origin"),
        source=source,
    )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _value_problem(op: str, key: str, value: Any) -> str | None:
    """What is wrong with one step field's value, or None; fields not listed here are free."""
    if key in ("port", "src_port"):
        return None if _is_int(value) and 0 <= value <= 0xFFFF else f"{value!r} is not a port 0..65535"
    if key == "src_ports":
        ok = isinstance(value, list) and value and all(_is_int(v) and 0 <= v <= 0xFFFF for v in value)
        return None if ok else f"{value!r} is not a non-empty list of ports 0..65535"
    if key == "proto":
        return None if value in ("tcp", "udp") else f"{value!r} is not one of 'tcp', 'udp'"
    if key == "family":
        return None if _is_int(value) and value in (4, 6) else f"{value!r} is not one of 4, 6"
    if key == "addr":
        try:
            ipaddress.ip_address(value)
        except ValueError:
            return f"{value!r} is not an IPv4 or IPv6 address"
    if key == "sock":
        return None if isinstance(value, str) else f"{value!r} is not a socket name (a string)"
    if key == "socks":
        ok = isinstance(value, list) and value and all(isinstance(v, str) for v in value)
        return None if ok else f"{value!r} is not a non-empty list of socket names"
    if key == "cpu":
        cpus = value if isinstance(value, list) and value else [value]
        if value == "all" or all(_is_int(c) and c >= 0 for c in cpus):
            return None
        return f"{value!r} is not a CPU number, a list of them, or \"all\""
    if key == "count":
        if op == "accept" and value == "all":
            return None
        return None if _is_int(value) and value >= 1 else f"{value!r} is not a count >= 1"
    if key == "backlog":
        return None if _is_int(value) and value >= 0 else f"{value!r} is not a backlog >= 0"
    if key == "how":
        return None if value in ("rd", "wr", "rdwr") or _is_int(value) else f"{value!r} is not one of 'rd', 'wr', 'rdwr'"
    if key == "program":
        from tracekit.recorder.steering import PROGRAMS

        return None if value in PROGRAMS else f"{value!r} is not a steering program (one of {', '.join(PROGRAMS)})"
    if key == "value" and op == "sysctl":
        return None if _is_int(value) else f"{value!r} is not an integer"
    return None
