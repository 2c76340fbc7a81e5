"""The README documents every command and its quickstart is what CI runs (as in sqlite-utils)."""

from __future__ import annotations

import re
from pathlib import Path

from tracekit.cli import main

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()


def _quickstart_commands() -> list[str]:
    section = README.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)\n```", section, flags=re.S)


def test_quickstart_has_exactly_two_one_line_commands():
    commands = _quickstart_commands()
    assert len(commands) == 2 and all("\n" not in c for c in commands)
    assert commands[0].startswith("pip install . && ")
    assert "fixtures/" in commands[0]


def test_ci_runs_the_readme_test_command():
    ci = (REPO / ".ci" / "run").read_text()
    assert ci.startswith("#!/usr/bin/env bash\n") and "set -euo pipefail" in ci
    assert _quickstart_commands()[1] in ci.splitlines()


def test_quickstart_fixture_exists():
    path = re.search(r"(fixtures/\S+)", _quickstart_commands()[0]).group(1)
    assert (REPO / path).is_file()


def test_every_command_has_a_readme_section():
    documented = set(re.findall(r"^### `tracekit (\w+)`", README, flags=re.M))
    missing = sorted(set(main.commands) - documented)
    assert not missing, f"README.md has no '### `tracekit <name>`' section for {missing}"
