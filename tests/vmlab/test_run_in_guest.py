"""Real guests: the command runs on the named kernel with this process's tracekit, its files come
back, and a hung or failing guest comes back as an error within its time bound."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

import tracekit
from tracekit import vmlab
from tracekit.vmlab import GuestTimeout

pytestmark = [pytest.mark.vm, pytest.mark.slow]

_PROBE = """
import os, socket, sys, tracekit
print(tracekit.__file__)
print(os.uname().release)
print(os.environ["EXTRA"])
mounts = open("/proc/mounts").read()
print(" ".join(fs for fs in ("bpf", "tracefs", "debugfs") if f" {fs} " in mounts))
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen()
c = socket.create_connection(s.getsockname()); print("lo", s.accept()[0].getpeername() == c.getsockname())
open("result.txt", "w").write(open("input.txt").read().upper())
"""


def test_guest_runs_this_tracekit_and_hands_back_files(tmp_path: Path, require_guest) -> None:
    kernel = require_guest("6.1")
    (tmp_path / "input.txt").write_text("from the host")
    (tmp_path / "probe.py").write_text(_PROBE)
    script = f"sleep 1 & {sys.executable} probe.py; wait; echo done >&2"
    result = vmlab.run_in_guest(kernel, script, outputs=["result.txt"], env={"EXTRA": "extra"},
                                workdir=tmp_path, timeout=300)
    assert result.kernel.startswith("6.1.") and result.returncode == 0
    lines = result.stdout.splitlines()
    assert lines == [tracekit.__file__, result.kernel, "extra", "bpf tracefs debugfs", "lo True"], result.stderr
    assert result.stderr == "done\n"
    assert result.files == {"result.txt": b"FROM THE HOST"}
    assert (tmp_path / "result.txt").read_text() == "FROM THE HOST"


def test_command_over_its_time_is_stopped_in_the_guest(require_guest) -> None:
    kernel = require_guest("6.1")
    with pytest.raises(GuestTimeout, match="ran longer than 2 s") as timed_out:
        vmlab.run_in_guest(kernel, "echo started; sleep 600", timeout=2)
    assert timed_out.value.stdout == "started\n"


def test_a_boot_over_its_time_kills_qemu(require_guest) -> None:
    kernel = require_guest("6.1")
    started = time.monotonic()
    with pytest.raises(GuestTimeout, match="its boot did not finish within"):
        vmlab.run_in_guest(kernel, ["true"], timeout=1, boot_timeout=2)
    assert time.monotonic() - started < 30

