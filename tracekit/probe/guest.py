"""Run `tracekit probe` in a guest kernel (`tracekit.vmlab`) around a workload, and hand back its trace.

The guest starts the probe, waits until bpftrace has attached (compiling and loading takes
minutes under emulation), runs the workload's commands one after the other, stops the probe with
SIGTERM (which finalizes the trace) and hands back the trace, the probe's messages and the
workload's outputs. Used by the VM tests and the probe benchmark.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["GuestCapture", "capture_in_guest", "PROBE_TRACE", "PROBE_LOG"]

PROBE_TRACE = "probe.parquet"
PROBE_LOG = "probe.err"
ATTACHED = "probe attached"


@dataclass(frozen=True)
class GuestCapture:
    kernel: str  # `uname -r` in the guest
    returncode: int  # of the guest script: 0 when the probe and every command succeeded
    stdout: str  # the guest script's output: one `step <name> exit <status>` line per command
    stderr: str
    files: Mapping[str, bytes]  # PROBE_TRACE, PROBE_LOG and the workload's outputs
    seconds: float


def _step(name: str, argv: Sequence[str]) -> str:
    words = " ".join(shlex.quote(w) for w in argv)
    return f"{words}; s=$?; echo \"step {name} exit $s\"; [ $s = 0 ] || status=$s"


def _script(commands: Sequence[tuple[str, Sequence[str]]], probe_args: Sequence[str],
            settle: float, before: Sequence[tuple[str, Sequence[str]]]) -> str:
    python = shlex.quote(sys.executable)
    probe = " ".join(shlex.quote(a) for a in ["-m", "tracekit", "probe", "-o", PROBE_TRACE,
                                               *probe_args])
    lines = [
        "status=0",
        *(_step(name, argv) for name, argv in before),
        f"{python} {probe} 2> {PROBE_LOG} &",
        "P=$!",
        f"until grep -q {shlex.quote(ATTACHED)} {PROBE_LOG} 2>/dev/null; do",
        "  kill -0 $P 2>/dev/null || { echo 'probe exited before attaching'; cat " + PROBE_LOG + "; exit 90; }",
        "  sleep 1",
        "done",
        *(_step(name, argv) for name, argv in commands),
    ]
    lines += [
        f"sleep {settle}",
        "kill -TERM $P; wait $P; s=$?; echo \"step probe exit $s\"; [ $s = 0 ] || status=$s",
        "exit $status",
    ]
    return "\n".join(lines) + "\n"


def capture_in_guest(kernel: str, commands: Sequence[tuple[str, Sequence[str]]], *,
                     outputs: Sequence[str] = (), probe_args: Sequence[str] = (),
                     timeout: float = 1800.0, settle: float = 1.0,
                     env: Mapping[str, str] | None = None,
                     before: Sequence[tuple[str, Sequence[str]]] = ()) -> GuestCapture:
    """Boot `kernel`, probe it while `commands` (name, argv) run, return what came back.

    Commands run in the guest's work directory (`before`: ahead of starting the probe);
    `outputs` are files they write there.
    `tracekit.vmlab.python_argv(...)` builds the argv of this interpreter. Raises `tracekit.vmlab` errors
    when the guest cannot run.
    """
    from tracekit import vmlab

    result = vmlab.run_in_guest(kernel, _script(commands, probe_args, settle, before),
                                outputs=[PROBE_TRACE, PROBE_LOG, *outputs], timeout=timeout,
                                env=env, check=False)
    return GuestCapture(result.kernel, result.returncode, result.stdout, result.stderr,
                        dict(result.files), result.seconds)

