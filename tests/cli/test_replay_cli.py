"""``tracekit replay`` end to end: the real replay over real Parquet traces, each exit status."""

from __future__ import annotations

import sys

import json
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from tracekit.cli import main
from tracekit.report.json import result_schema
from tracekit.trace import read_metadata, write_trace

REPO = Path(__file__).resolve().parents[2]
# A recording of the real kernel with migrations: every decision replays as observed.
RECORDED = REPO / "fixtures" / "recorded" / "story-rolling-restart-migrate.parquet"


def run(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(main, ["replay", *map(str, args)], env=env)


@pytest.fixture
def clean_trace() -> Path:
    """A real trace whose observations follow the kernel."""
    return RECORDED


def move_accepts(source: Path, target: Path, count: int) -> list[tuple[str, int]]:
    """Copy a trace, moving the first ``count`` accepts that have another candidate socket onto it.

    The other candidate is a socket that accepted on the same host and local port. Returns the
    (host, seq) of the moved observations.
    """
    table = pq.read_table(source)
    rows = table.to_pylist()
    accepts = [r for r in rows if r["event"] == "accept" and r["sk"] is not None]
    moved: list[tuple[str, int]] = []
    for row in accepts:
        others = sorted({a["sk"] for a in accepts
                         if (a["host"], a["lport"]) == (row["host"], row["lport"]) and a["sk"] != row["sk"]})
        if others and len(moved) < count:
            row["sk"] = others[0]
            moved.append((row["host"], row["seq"]))
    assert len(moved) == count, f"{source} has too few accepts with an alternative socket"
    metadata = read_metadata(source)
    write_trace(target, rows, metadata, source=metadata.get("tracekit.source", "record"))
    return moved


@pytest.fixture
def wrong_trace(clean_trace, tmp_path) -> tuple[Path, list[tuple[str, int]]]:
    target = tmp_path / "wrong.parquet"
    return target, move_accepts(clean_trace, target, 2)


def test_clean_trace_exits_0_and_writes_every_output(clean_trace, tmp_path):
    out = {name: tmp_path / name for name in ("s.json", "r.html", "r.xml", "r.parquet")}
    result = run(clean_trace, "--json", out["s.json"], "--html", out["r.html"],
                 "--junit", out["r.xml"], "--results", out["r.parquet"])
    assert result.exit_code == 0, result.output
    summary = json.loads(out["s.json"].read_bytes())
    assert summary["mismatched"] == 0 and summary["decisions"] > 0
    assert "MISMATCH" not in result.stdout and summary["verdict"].upper() in result.stdout
    assert out["r.html"].read_text().startswith("<!DOCTYPE html>")
    assert b"<testsuites" in out["r.xml"].read_bytes()
    assert pq.read_table(out["r.parquet"]).num_rows == summary["decisions"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_summary_is_byte_identical_across_runs_and_follows_the_schema(clean_trace, tmp_path):
    jsonschema = pytest.importorskip("jsonschema")
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    assert run(clean_trace, "--json", first).exit_code == 0
    assert run(clean_trace, "--json", second).exit_code == 0
    assert first.read_bytes() == second.read_bytes()
    jsonschema.validate(json.loads(first.read_bytes()), result_schema())


def test_wrong_observations_exit_1_and_are_named_exactly(wrong_trace, tmp_path):
    trace, moved = wrong_trace
    summary_path, results_path = tmp_path / "s.json", tmp_path / "r.parquet"
    result = run(trace, "--json", summary_path, "--results", results_path)
    assert result.exit_code == 1, result.output
    summary = json.loads(summary_path.read_bytes())
    assert summary["mismatched"] == len(moved)
    assert [(m["host"], m["seq"]) for m in summary["mismatches"]] == moved
    assert all(m["explanation"] for m in summary["mismatches"])
    results = pq.read_table(results_path)
    mismatch = results.filter(pc.equal(results["verdict"], "mismatch")).to_pylist()
    assert [(r["host"], r["seq"]) for r in mismatch] == moved
    assert "MISMATCH" in result.stdout
    for host, seq in moved:
        assert f"{host} seq {seq} accept" in result.stdout


def test_no_explain_and_max_mismatches_shape_the_terminal_report(wrong_trace, tmp_path):
    trace, moved = wrong_trace
    summary_path = tmp_path / "s.json"
    full = run(trace, "--json", summary_path)
    explanation = json.loads(summary_path.read_bytes())["mismatches"][0]["explanation"]
    first_words = explanation.split()[0]
    brief = run(trace, "--no-explain", "--max-mismatches", "1")
    assert full.exit_code == brief.exit_code == 1
    assert f"Mismatches (first 1 of {len(moved)})" in brief.stdout
    assert f"{moved[1][0]} seq {moved[1][1]}" not in brief.stdout
    assert f"{moved[1][0]} seq {moved[1][1]}" in full.stdout
    assert first_words in full.stdout


@pytest.mark.parametrize("content", [None, b"", b"PAR1 this is not parquet PAR1"])
def test_missing_or_garbage_trace_exits_2_naming_the_file(tmp_path, content):
    trace = tmp_path / "input.parquet"
    if content is not None:
        trace.write_bytes(content)
    result = run(trace, "--json", tmp_path / "s.json")
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("tracekit: ") and "input.parquet" in result.stderr
    assert "Traceback" not in result.output
    assert not (tmp_path / "s.json").exists()


def test_unknown_profile_exits_2(clean_trace, tmp_path):
    result = run(clean_trace, "--profile", "no-such-kernel", "--json", tmp_path / "s.json")
    assert result.exit_code == 2, result.output
    assert "no-such-kernel" in result.stderr
    assert not (tmp_path / "s.json").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--policy", "nonsense"], "NAME=module:function"),
        (["--policy", "p=tracekit_no_such_module:f"], "cannot import"),
        (["--policy", "p=os.path:no_such_function"], "no function"),
        (["--policy", "p=os.path:join", "--policy", "p=os.path:split"], "given twice"),
        (["--max-mismatches", "-1"], "--max-mismatches"),
        (["--bogus"], "--bogus"),
    ],
)
def test_usage_errors_exit_2(clean_trace, args, message):
    result = run(clean_trace, *args)
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_a_failing_output_leaves_no_output_at_all(clean_trace, tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    summary_path, old = tmp_path / "s.json", b"previous run\n"
    summary_path.write_bytes(old)
    result = run(clean_trace, "--json", summary_path, "--html", tmp_path / "r.html",
                 "--junit", blocker / "r.xml")
    assert result.exit_code == 2, result.output
    assert "not-a-dir" in result.stderr
    assert summary_path.read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["not-a-dir", "s.json"]


def test_no_progress_bar_when_stderr_is_not_a_terminal(clean_trace):
    result = run(clean_trace)
    assert result.exit_code == 0
    assert result.stderr == ""


def _stderr_on_a_terminal(args: list[str]) -> str:
    """Run `tracekit ARGS` with stderr on a pseudo-terminal and stdout on a pipe; what stderr got."""
    import os
    import pty
    import subprocess

    primary, secondary = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "tracekit", *args], stdout=subprocess.DEVNULL,
                            stderr=secondary, env={**os.environ, "COLUMNS": "100"})
    os.close(secondary)
    chunks = []
    while True:
        try:
            chunk = os.read(primary, 4096)
        except OSError:  # the terminal closed with the process
            break
        if not chunk:
            break
        chunks.append(chunk)
    proc.wait()
    os.close(primary)
    return b"".join(chunks).decode("utf-8", "replace")


@pytest.mark.parametrize("command,label", [("replay", "replaying"), ("simulate", "simulating")])
def test_a_progress_bar_is_drawn_on_a_terminal_and_not_in_a_pipe(tmp_path, command, label):
    trace = tmp_path / "t.parquet"
    simulate_args = ["simulate", "steady", "--events", "300000", "-o", str(trace)]
    args = simulate_args if command == "simulate" else ["replay", str(trace)]
    if command == "replay":
        made = CliRunner().invoke(main, simulate_args)
        assert made.exit_code == 0
    assert label in _stderr_on_a_terminal(args)
    piped = CliRunner().invoke(main, args)  # not a terminal: no bar
    assert piped.exit_code == 0 and label not in piped.output


def test_help_documents_every_option():
    result = CliRunner().invoke(main, ["replay", "--help"])
    assert result.exit_code == 0
    for option in ("--profile", "--json", "--results", "--html", "--junit", "--explain",
                   "--max-mismatches", "--policy", "Exit status"):
        assert option in result.output


def ebpf_trace(path: Path) -> Path:
    """Two TCP listeners whose group runs the eBPF program 'pick', and one connection."""
    rows = []
    for sk in (1, 2):
        rows += [
            {"event": "socket", "sk": sk, "proto": "tcp", "family": 4},
            {"event": "setsockopt", "sk": sk, "name": "SO_REUSEPORT", "value": 1, "ret": 0},
            {"event": "bind", "sk": sk, "laddr": "127.0.0.1", "lport": 8080, "ret": 0},
            {"event": "listen", "sk": sk, "ret": 0},
        ]
    flow = {"laddr": "127.0.0.1", "lport": 8080, "raddr": "127.0.0.1", "rport": 40000}
    rows += [
        {"event": "setsockopt", "sk": 1, "name": "SO_ATTACH_REUSEPORT_EBPF", "prog": b"pick", "ret": 0},
        {"event": "syn", "proto": "tcp", "family": 4, "hash": 7, "cpu": 0, **flow},
        {"event": "accept", "sk": 2, **flow},
    ]
    rows = [{"host": "h1", "seq": seq, **row} for seq, row in enumerate(rows, 1)]
    return write_trace(path, rows, {"tracekit.kernel": "6.18.0"}, source="test")


@pytest.fixture
def policies_module(tmp_path, monkeypatch) -> str:
    (tmp_path / "tk_test_policies.py").write_text(
        "def second(ctx):\n    return 2\n\n"
        "def broken(ctx):\n    raise RuntimeError('policy exploded')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return "tk_test_policies"


def test_registered_policy_decides_and_an_unregistered_one_is_unknown(tmp_path, policies_module):
    trace = ebpf_trace(tmp_path / "ebpf.parquet")
    summary_path = tmp_path / "s.json"
    unregistered = run(trace, "--json", summary_path)
    assert unregistered.exit_code == 0, unregistered.output
    assert json.loads(summary_path.read_bytes())["unknown_reasons"] == {"unregistered-prog": 1}
    registered = run(trace, "--policy", f"pick={policies_module}:second", "--json", summary_path)
    assert registered.exit_code == 0, registered.output
    summary = json.loads(summary_path.read_bytes())
    assert (summary["matched"], summary["unknown"]) == (1, 0)


def test_internal_error_exits_3_with_one_line_and_no_traceback(tmp_path, policies_module):
    trace = ebpf_trace(tmp_path / "ebpf.parquet")
    result = run(trace, "--policy", f"pick={policies_module}:broken", "--json", tmp_path / "s.json")
    assert result.exit_code == 3, result.output
    first, *rest = result.stderr.splitlines()
    assert first == "tracekit: internal error: RuntimeError: policy exploded"
    assert "TRACEKIT_DEBUG=1" in rest[0] and "report" in rest[0]
    assert "Traceback" not in result.output
    assert not (tmp_path / "s.json").exists()


def test_debug_env_lets_the_traceback_through(tmp_path, policies_module):
    trace = ebpf_trace(tmp_path / "ebpf.parquet")
    result = run(trace, "--policy", f"pick={policies_module}:broken", env={"TRACEKIT_DEBUG": "1"})
    assert isinstance(result.exception, RuntimeError)


def test_explain_all_explains_every_result_row(clean_trace, tmp_path):
    plain, explained = tmp_path / "plain.parquet", tmp_path / "explained.parquet"
    assert run(clean_trace, "--results", plain).exit_code == 0
    assert run(clean_trace, "--results", explained, "--explain-all").exit_code == 0
    assert pq.read_table(plain)["explanation"].null_count == pq.read_table(plain).num_rows
    assert pq.read_table(explained)["explanation"].null_count == 0
