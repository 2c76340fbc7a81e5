"""`tracekit record --vm` refuses what it cannot boot or record before booting anything (exit 2).

Recording in real guests is tested in tests/differential/test_vm_differential.py (marker `vm`)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from tracekit.recorder import record
from tracekit.recorder.library import resolve_scenario
from tracekit.cli import main
from tracekit.errors import TracekitError


def _record(*args: str):
    return CliRunner().invoke(main, ["record", *args])


def test_unknown_kernel_is_named_with_what_is_installed(tmp_path: Path) -> None:
    out = _record("--random", "1", "--vm", "4.19", "-o", str(tmp_path / "t.parquet"))
    assert out.exit_code == 2 and "tracekit: no kernel '4.19' under /boot" in out.output
    assert not (tmp_path / "t.parquet").exists()


def test_unknown_scenario_is_refused_before_booting(tmp_path: Path) -> None:
    out = _record("no-such-scenario", "--vm", "/boot/vmlinuz-does-not-matter", "-o", str(tmp_path / "t.parquet"))
    assert out.exit_code == 2 and "no built-in scenario 'no-such-scenario'" in out.output


def test_a_scenario_object_cannot_travel_to_a_guest(tmp_path: Path) -> None:
    with pytest.raises(TracekitError, match="needs a built-in scenario name or a .toml file"):
        record(resolve_scenario("story-incoming-cpu"), vm="6.1", output=tmp_path / "t.parquet")
