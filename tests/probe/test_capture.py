"""The capture loop around bpftrace: reordering, losses, stopping, and what is left on disk.

This machine's kernel has no kprobes, so bpftrace cannot attach here: a stand-in program prints
what bpftrace prints for the probe's program (records of several CPUs out of time order, a loss
report) and stops on SIGINT as bpftrace does. The real bpftrace runs in test_probe_vm.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from test_translate import SK, le32, line, select, sock
from tracekit.errors import TracekitError
from tracekit.probe.run import capture_with
from tracekit.trace import read_metadata, read_trace

REPO = Path(__file__).resolve().parents[2]
STANDIN = """\
#!{python}
import os, signal, sys, time
if sys.argv[1:] == ["--version"]:
    print("bpftrace v0.17.0 (stand-in)")
    sys.exit(0)
stop = []
signal.signal(signal.SIGINT, lambda *_: stop.append(1))
lines = {lines!r}
print("Attaching 20 probes...", flush=True)
print("TK B %d 0" % time.monotonic_ns(), flush=True)
base = time.monotonic_ns()
for text in lines:
    if text.startswith("SLEEP "):
        time.sleep(float(text.split()[1]))
        continue
    if text.startswith("TK "):
        code, offset, rest = text.split(" ", 3)[1], int(text.split(" ")[2]), text.split(" ", 3)[3]
        text = "TK %s %d %s" % (code, base + offset, rest)
    sys.stdout.write(text)
    sys.stdout.flush()
while not stop and {wait}:
    time.sleep(0.05)
sys.exit(0)
"""


def standin(tmp_path: Path, lines: list[str], *, wait: bool = True) -> str:
    path = tmp_path / "bpftrace"
    path.write_text(STANDIN.format(python=sys.executable, lines=lines, wait=wait))
    path.chmod(0o755)
    return str(path)


def scenario() -> list[str]:
    """A group of two; selections on two CPUs printed out of time order; a loss; one more."""
    return [
        line("A", 100, 0, **sock("a"), inany=0, ret=0),
        line("D", 200, 0, **sock("b"), sk2=SK["a"], inany=0, ret=0),
        line("S", 400, 1, **select("a", 0xF000_0000, "b", rport=2)),  # CPU 1 printed first
        line("S", 300, 0, **select("a", 1, "a", rport=1)),
        "SLEEP 1.5",  # these leave the reorder window before the loss is reported
        "Lost 3 events\n",
        line("S", 500, 1, **select("a", 1, "a", rport=3)),
    ]


def test_records_come_out_in_time_order_and_a_loss_starts_ids_afresh(tmp_path):
    stop = threading.Event()
    ready = []
    stats = capture_with(standin(tmp_path, scenario()), tmp_path / "p.parquet", stop=stop,
                         on_ready=lambda s: (ready.append(s), threading.Timer(1.0, stop.set).start()))
    assert ready and stats.lost == 3 and stats.rows == 5
    frame = read_trace(tmp_path / "p.parquet")
    selects = frame[frame.event == "reuseport_select_sock"]
    assert list(selects.rport) == [1, 2, 3]  # seq follows the kernel's clock, not print order
    assert list(frame.ts_ns) == sorted(frame.ts_ns)
    assert list(selects.sk) == [1, 1, 3]  # after the loss sk a is met again: a new id
    meta = read_metadata(tmp_path / "p.parquet")
    assert (meta["tracekit.source"], meta["tracekit.probe.lost_events"]) == ("probe", "3")
    assert meta["tracekit.kernel"] == os.uname().release
    assert meta["tracekit.probe.tool"] == "bpftrace v0.17.0 (stand-in)"


def test_duration_ends_the_capture(tmp_path):
    start = time.monotonic()
    stats = capture_with(standin(tmp_path, scenario()[:3]), tmp_path / "p.parquet", duration=0.5)
    assert stats.rows == 3 and time.monotonic() - start < 30
    assert len(read_trace(tmp_path / "p.parquet")) == 3


def test_bpftrace_ending_by_itself_still_finalizes(tmp_path):
    stats = capture_with(standin(tmp_path, scenario(), wait=False), tmp_path / "p.parquet")
    assert stats.rows == 5 and (tmp_path / "p.parquet").exists()


def test_a_line_tracekit_cannot_read_leaves_no_file(tmp_path):
    with pytest.raises(TracekitError, match="bpftrace printed a line tracekit cannot read"):
        capture_with(standin(tmp_path, scenario()[:2] + ["TK S 1 2 3\n"]), tmp_path / "p.parquet",
                     duration=5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bpftrace"]


def test_bpftrace_that_never_attaches_is_refused(tmp_path):
    failing = tmp_path / "bpftrace"
    failing.write_text(f"#!{sys.executable}\nimport sys\n"
                       "print('ERROR: reuseport_alloc: no such probe', file=sys.stderr)\nsys.exit(1)\n")
    failing.chmod(0o755)
    with pytest.raises(TracekitError, match="did not attach its probes: ERROR: reuseport_alloc"):
        capture_with(str(failing), tmp_path / "p.parquet")
    assert not (tmp_path / "p.parquet").exists()


CAPTURE = """\
import sys
from tracekit.probe.run import capture_with
capture_with(sys.argv[1], sys.argv[2], on_ready=lambda s: print("ready", flush=True))
"""


def _capturing(tmp_path: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{Path(__file__).parent}")
    process = subprocess.Popen([sys.executable, "-c", textwrap.dedent(CAPTURE),
                                standin(tmp_path, scenario()), str(tmp_path / "p.parquet")],
                               stdout=subprocess.PIPE, text=True, env=env)
    assert process.stdout.readline().strip() == "ready"
    time.sleep(1.0)  # past the reorder window: the rows are handed to the writer
    return process


def test_sigterm_finalizes_a_valid_file(tmp_path):
    process = _capturing(tmp_path)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0
    assert len(read_trace(tmp_path / "p.parquet")) == 5


def test_a_killed_capture_leaves_no_trace_file(tmp_path):
    process = _capturing(tmp_path)
    process.kill()
    process.wait(timeout=60)
    assert not (tmp_path / "p.parquet").exists()
