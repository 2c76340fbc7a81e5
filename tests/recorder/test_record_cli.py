"""`tracekit record` on the command line."""

from __future__ import annotations

import os

import pytest
from click.testing import CliRunner

from tracekit.cli import main


def test_list_names_every_scenario_with_a_description():
    result = CliRunner().invoke(main, ["record", "--list"])
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert any(line.startswith("story-rolling-restart-migrate ") for line in lines)
    assert all(len(line.split(None, 1)) == 2 for line in lines)


@pytest.mark.parametrize("args", [["record", "-o", "x.parquet"], ["record", "nope-no-such-scenario", "-o", "x.parquet"], ["record", "story-scale-down"]])
def test_usage_errors_exit_2(args, tmp_path):
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2


@pytest.mark.kernel
@pytest.mark.usefixtures("kernel_recording")
def test_record_random_writes_a_trace(tmp_path):
    result = CliRunner().invoke(main, ["record", "--random", "5", "--steps", "20", "-o", str(tmp_path / "t.parquet")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "t.parquet").stat().st_size > 0


@pytest.mark.kernel
@pytest.mark.usefixtures("kernel_recording")
def test_a_step_the_machine_cannot_run_is_named_by_file_and_step(tmp_path):
    scenario = tmp_path / "cpus.toml"
    scenario.write_text(
        'name = "cpus"\n\n[[step]]\nop = "open"\nsocks = ["a", "b"]\nproto = "udp"\n'
        'addr = "127.0.0.1"\nport = 8000\n\n[[step]]\nop = "datagrams"\naddr = "127.0.0.1"\n'
        f'port = 8000\ncount = 2\ncpu = {os.cpu_count() + 8}\n')
    output = tmp_path / "t.parquet"
    result = CliRunner().invoke(main, ["record", str(scenario), "-o", str(output)])
    assert result.exit_code == 2
    assert f"{scenario}: step 2 (datagrams): cpu {os.cpu_count() + 8} does not exist" in result.output
    assert "Traceback" not in result.output and not output.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop privileges")
def test_without_privileges_the_message_says_what_is_missing():
    import tracekit.recorder.api  # noqa: F401 - imported before privileges go

    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        os.setgid(65534)
        os.setuid(65534)
        result = CliRunner().invoke(main, ["record", "story-scale-down", "-o", "/tmp/never.parquet"])
        os.write(write_fd, f"{result.exit_code}\n{result.output}".encode())
        os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd) as pipe:
        code, output = pipe.read().split("\n", 1)
    os.waitpid(pid, 0)
    assert code == "2"
    assert "unshare(CLONE_NEWNET)" in output and "root" in output
