"""Bad input a user will meet, through the real `tracekit` group: exit 2, one `tracekit: ...` line
naming the option or file, no traceback, no output file."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from tracekit.cli import main

SCENARIO = """\
name = "refusal"

[[step]]
op = "open"
socks = ["a", "b"]
proto = "tcp"
addr = "127.0.0.1"
port = 8000

[[step]]
op = "accept"
sock = "a"
"""


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def _invoke(runner: CliRunner, args: list[str]):
    return runner.invoke(main, args, prog_name="tracekit")


def _refused(result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("tracekit: "), result.stderr
    assert "Traceback" not in result.stderr and "Usage:" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.mark.parametrize("args, fragments", [
    (["simulate", "--events", "0"], ("'--events'", "0 is not in the range", "tracekit simulate --help")),
    (["simulate", "nosuch"], ("'[WORKLOAD]'", "'nosuch' is not one of")),
    (["simulate", "--inject-faults", "2"], ("'--inject-faults'",)),
    (["simulate", "--events", "10", "--kernel", "garbage"], ("--kernel 'garbage' is not a kernel release",)),
    (["record", "--random", "1", "--steps", "0"], ("'--steps'",)),
    (["record", "--random", "x"], ("'--random'",)),
    (["replay", "t.parquet", "--policy", "bad"], ("'--policy'", "NAME=module:function")),
    (["normalize", "in.jsonl"], ("Missing option '-o'",)),
    (["nosuch"], ("No such command 'nosuch'", "tracekit --help")),
    (["--bogus"], ("No such option '--bogus'",)),
])
def test_bad_options_are_refused_on_one_line(runner, tmp_path, monkeypatch, args, fragments):
    monkeypatch.chdir(tmp_path)
    result = _invoke(runner, [*args, "-o", "out.parquet"] if args[0] in ("simulate", "record") else args)
    _refused(result, *fragments)
    assert not (tmp_path / "out.parquet").exists()


def test_a_directory_as_input_names_the_argument(runner, tmp_path):
    _refused(_invoke(runner, ["normalize", str(tmp_path), "-o", str(tmp_path / "o.parquet")]),
             "'INPUT'", "is a directory")


@pytest.mark.parametrize("where, fragment", [
    (lambda tmp: tmp / "file" / "out.parquet", "file is not a directory"),
    (lambda tmp: "/proc/tracekit-out.parquet", "cannot write"),
])
def test_an_unwritable_output_names_the_output_not_a_temporary(runner, tmp_path, basic_jsonl, where, fragment):
    (tmp_path / "file").write_text("")
    target = str(where(tmp_path))
    result = _invoke(runner, ["normalize", str(basic_jsonl), "-o", target])
    _refused(result, f"tracekit: {target}: cannot write", fragment)
    assert ".tmp" not in result.stderr


def test_simulate_refuses_an_unwritable_output(runner, tmp_path):
    (tmp_path / "file").write_text("")
    target = tmp_path / "file" / "s.parquet"
    _refused(_invoke(runner, ["simulate", "-n", "10", "-o", str(target)]), f"{target}: cannot write")


@pytest.mark.parametrize("edit, fragments", [
    (("port = 8000", "port = 70000"), ("step 1 (open), field 'port'", "70000 is not a port")),
    (("proto = \"tcp\"", "proto = \"sctp\""), ("field 'proto'", "'sctp' is not one of")),
    (("addr = \"127.0.0.1\"", "addr = \"localhost:1\""), ("field 'addr'",)),
    (("sock = \"a\"", "sock = \"z\""), ("step 2 (accept)", "socket 'z' is used before")),
    (("socks = [", "sockz = ["), ("step 1 (open): unknown field(s) sockz",)),
    (("name = \"refusal\"", "name = \"refusal\"\norign = \"x\""), ("unknown key(s) orign",)),
    (("port = 8000\n", "\n"), ("step 1 (open): missing field(s) port",)),
])
def test_a_scenario_with_a_typo_is_refused_before_recording(runner, tmp_path, edit, fragments):
    scenario = tmp_path / "s.toml"
    scenario.write_text(SCENARIO.replace(*edit))
    output = tmp_path / "r.parquet"
    result = _invoke(runner, ["record", str(scenario), "-o", str(output)])
    _refused(result, f"{scenario}: ", *fragments)
    assert not output.exists()


def test_a_failed_run_leaves_no_output_directories_behind(runner, tmp_path):
    """`--results out/deeper/r.parquet` creates out/deeper for the run; a bad trace removes them."""
    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"PAR1 not really")
    out = tmp_path / "out"
    result = runner.invoke(main, ["replay", str(garbage), "--results", str(out / "deeper" / "r.parquet")])
    assert result.exit_code == 2 and "garbage.parquet" in result.output
    assert not out.exists()


@pytest.mark.parametrize("release", ["", "linux", "six.eight"])
def test_normalize_refuses_a_kernel_that_is_not_a_release(runner, tmp_path, basic_jsonl, release):
    output = tmp_path / "t.parquet"
    result = runner.invoke(main, ["normalize", str(basic_jsonl), "-o", str(output), "--kernel", release])
    assert result.exit_code == 2 and "is not a kernel release" in result.output
    assert not output.exists()


def test_record_usage_errors_point_to_help(runner, tmp_path):
    result = runner.invoke(main, ["record", "-o", str(tmp_path / "t.parquet")], prog_name="tracekit")
    assert result.exit_code == 2
    assert "give a SCENARIO or --random SEED" in result.output and "tracekit record --help" in result.output
