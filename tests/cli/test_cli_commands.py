"""tracekit normalize / validate through click, and the console script for real."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from tracekit.cli import cli_errors, main
from tracekit.errors import TracekitError
from tracekit.trace import read_metadata, validate_trace


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def test_normalize_then_validate(runner, basic_jsonl, basic_rows, tmp_path):
    output = tmp_path / "basic.parquet"
    result = runner.invoke(main, ["normalize", str(basic_jsonl), "-o", str(output), "--kernel", "6.18.1"])
    assert result.exit_code == 0, result.output
    assert f"wrote {output}: {len(basic_rows)} rows" in result.stdout
    assert read_metadata(output)["tracekit.kernel"] == "6.18.1"
    result = runner.invoke(main, ["validate", str(output)])
    assert result.exit_code == 0, result.output
    for text in (f"valid tracekit-trace/1 trace: {len(basic_rows)} rows, 3 hosts", "tcp-h1", "1..17",
                 "reuseport_select_sock", "tracekit.kernel", "6.18.1"):
        assert text in result.stdout


def test_validate_output_is_deterministic(runner, basic_parquet):
    first = runner.invoke(main, ["validate", str(basic_parquet)]).stdout
    assert first == runner.invoke(main, ["validate", str(basic_parquet)]).stdout


def test_bad_input_exits_2_with_one_message_and_no_output(runner, write_jsonl, syn, tmp_path):
    source = write_jsonl([syn(seq=1), syn(seq=2, lport=70000)])
    output = tmp_path / "out.parquet"
    result = runner.invoke(main, ["normalize", str(source), "-o", str(output)])
    assert result.exit_code == 2
    assert result.stderr == f"tracekit: {source}: line 2, column 'lport': 70000 is out of range 0..65535\n"
    assert result.stdout == ""
    assert not output.exists()


@pytest.mark.parametrize("make_input, fragment", [
    (lambda tmp, jsonl: jsonl, "not a Parquet file"),
    (lambda tmp, jsonl: tmp / "absent.parquet", "no such file"),
])
def test_validate_refusals_exit_2(runner, tmp_path, basic_jsonl, make_input, fragment):
    result = runner.invoke(main, ["validate", str(make_input(tmp_path, basic_jsonl))])
    assert result.exit_code == 2
    assert result.stderr.startswith("tracekit: ") and fragment in result.stderr
    assert "Traceback" not in result.stderr


def test_usage_error_exits_2(runner, basic_jsonl):
    result = runner.invoke(main, ["normalize", str(basic_jsonl)])
    assert result.exit_code == 2
    assert "Missing option '-o'" in result.stderr


def test_unwritable_output_exits_2(runner, basic_jsonl, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = runner.invoke(main, ["normalize", str(basic_jsonl), "-o", str(blocker / "out.parquet")])
    assert result.exit_code == 2
    assert result.stderr.startswith("tracekit: ") and "Traceback" not in result.stderr


@click.command()
@click.option("--kind", default="bug")
@cli_errors
def _failing(kind: str) -> None:
    if kind == "user":
        raise TracekitError("the input is wrong")
    raise KeyError("oops")


def test_internal_error_exits_3_with_a_hint(runner, monkeypatch):
    monkeypatch.delenv("TRACEKIT_DEBUG", raising=False)
    result = runner.invoke(_failing, [])
    assert result.exit_code == 3
    assert result.stderr.startswith("tracekit: internal error: KeyError: 'oops'\n")
    assert "TRACEKIT_DEBUG=1" in result.stderr and "Traceback" not in result.stderr
    assert runner.invoke(_failing, ["--kind", "user"]).stderr == "tracekit: the input is wrong\n"


def test_debug_shows_the_traceback(runner, monkeypatch):
    monkeypatch.setenv("TRACEKIT_DEBUG", "1")
    result = runner.invoke(_failing, [])
    assert isinstance(result.exception, KeyError)


def _console_script() -> str | None:
    beside_python = Path(sys.executable).with_name("tracekit")
    return str(beside_python) if beside_python.exists() else shutil.which("tracekit")


def test_console_script_round_trip(basic_jsonl, tmp_path):
    script = _console_script()
    if script is None:
        pytest.skip("the tracekit console script is not installed (pip install .)")
    output = tmp_path / "basic.parquet"
    run = subprocess.run([script, "normalize", str(basic_jsonl), "-o", str(output)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert validate_trace(output).rows == len(basic_jsonl.read_text().splitlines())
    run = subprocess.run([script, "validate", str(basic_jsonl)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert run.stderr.startswith("tracekit: ") and "not a Parquet file" in run.stderr


def test_python_dash_m(basic_parquet):
    run = subprocess.run([sys.executable, "-m", "tracekit", "validate", str(basic_parquet)],
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert run.returncode == 0, run.stderr
    assert "valid tracekit-trace/1 trace" in run.stdout
