"""The built-in scenario library: TOML files shipped in tracekit/recorder/scenarios/."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from tracekit.recorder.scenario import Scenario, ScenarioError, load_scenario, parse_scenario

import tomllib


def _files() -> dict[str, object]:
    folder = resources.files("tracekit.recorder") / "scenarios"
    return {entry.name[: -len(".toml")]: entry for entry in folder.iterdir() if entry.name.endswith(".toml")}


def list_scenarios() -> dict[str, str]:
    """Built-in scenario names and their one-line descriptions, sorted by name."""
    return {name: builtin_scenario(name).description for name in sorted(_files())}


def builtin_scenario(name: str) -> Scenario:
    files = _files()
    if name not in files:
        raise ScenarioError(f"no built-in scenario {name!r}; `tracekit record --list` shows them")
    return parse_scenario(tomllib.loads(files[name].read_text()), source=f"{name}.toml")


def resolve_scenario(scenario: str | Path | Scenario) -> Scenario:
    """A Scenario, a path to a TOML file, or the name of a built-in scenario."""
    if isinstance(scenario, Scenario):
        return scenario
    path = Path(scenario)
    if path.suffix == ".toml" or path.exists():
        return load_scenario(path)
    return builtin_scenario(str(scenario))
