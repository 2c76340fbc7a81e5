"""Real guests: the command runs on the named kernel with this process's tracekit, its files come
back, and a hung boot comes back as an error within its time bound.

A command over its time is stopped in the guest by `timeout` (exit status 124, which
test_handback.py turns into GuestTimeout); it costs a whole boot, so CI does not repeat it here.
"""

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
print(open(os.environ["HOST_FILE"]).read())  # the host's /tmp shows through, outside the work dir
open("/tmp/scratch", "w").write("writable")
"""


def test_guest_runs_this_tracekit_and_hands_back_files(tmp_path_factory, require_guest) -> None:
    kernel = require_guest("6.1")
    tmp_path = tmp_path_factory.mktemp("work")
    host_file = tmp_path_factory.mktemp("host") / "host.txt"
    host_file.write_text("seen")
    (tmp_path / "input.txt").write_text("from the host")
    (tmp_path / "probe.py").write_text(_PROBE)
    script = f"sleep 1 & {sys.executable} probe.py; wait; echo done >&2"
    result = vmlab.run_in_guest(kernel, script, outputs=["result.txt"],
                                env={"EXTRA": "extra", "HOST_FILE": str(host_file)}, workdir=tmp_path, timeout=300)
    assert result.kernel.startswith("6.1.") and result.returncode == 0
    lines = result.stdout.splitlines()
    assert lines == [tracekit.__file__, result.kernel, "extra", "bpf tracefs debugfs", "lo True", "seen"], result.stderr
    assert result.stderr == "done\n"
    assert result.files == {"result.txt": b"FROM THE HOST"}
    assert (tmp_path / "result.txt").read_text() == "FROM THE HOST"


def test_a_boot_over_its_time_kills_qemu(require_guest) -> None:
    kernel = require_guest("6.1")
    started = time.monotonic()
    with pytest.raises(GuestTimeout, match="its boot did not finish within"):
        vmlab.run_in_guest(kernel, ["true"], timeout=1, boot_timeout=2)
    assert time.monotonic() - started < 30

