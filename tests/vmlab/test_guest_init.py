"""The guest init script: quoting survives a real shell, and the whole script is one brace group."""

from __future__ import annotations

import subprocess

from tracekit.vmlab.guest_init import GuestJob, render_init


def _run_command_line(job: GuestJob) -> str:
    """Run the script's command line (env -i ... timeout ... argv) in a real shell outside a guest."""
    line = next(l for l in render_init(job).splitlines() if l.startswith("env -i "))
    return subprocess.run(["/bin/sh", "-c", line.split(" </dev/null")[0]], capture_output=True, text=True).stdout


def test_arguments_and_environment_reach_the_command_verbatim(tmp_path) -> None:
    awkward = ["it's", "$HOME", "a b", "`x`", ";", ""]
    printed = _run_command_line(GuestJob(("printf", "[%s]\\n", *awkward), str(tmp_path)))
    assert printed.splitlines() == [f"[{a}]" for a in awkward]
    assert _run_command_line(GuestJob(("printenv", "K"), str(tmp_path), {"K": "v 'q' $x"})) == "v 'q' $x\n"


def test_script_is_parsed_whole_before_it_runs() -> None:
    script = render_init(GuestJob(("true",), "/tmp/w"))
    body = script.splitlines()
    assert body[2] == "{" and body[-1] == "}"
    assert subprocess.run(["/bin/sh", "-n", "-c", script]).returncode == 0


def test_timeout_rounds_up_to_a_whole_second() -> None:
    assert "timeout -k 5 1 true" in render_init(GuestJob(("true",), "/w", timeout=0.2))
