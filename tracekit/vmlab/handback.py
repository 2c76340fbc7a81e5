"""What comes back from a guest: its command's exit status, output and files, or why there are none.

The guest's init writes into the control directory (see guest_init.py): `booted` (the release it
booted, once the shares are mounted), `stdout`, `stderr`, `status` (the exit status, written
last) and `init.log` (what went wrong while setting up). `collect()` turns those files, the
serial console log and the requested outputs of the work directory into a `GuestResult`, or into
the exception that says why the command did not finish.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tracekit.vmlab import guest_init
from tracekit.vmlab.errors import GuestBootError, GuestCommandFailed, GuestTimeout

__all__ = ["GuestResult", "collect", "console_tail", "TIMEOUT_STATUS"]

TIMEOUT_STATUS = 124  # coreutils `timeout`: the command ran out of time
_TAIL_LINES = 25
_PANIC = re.compile(r"Kernel panic[^\n]*")


@dataclass(frozen=True)
class GuestResult:
    """A command's run in a guest."""

    kernel: str  # `uname -r` inside the guest
    returncode: int
    stdout: str
    stderr: str
    files: Mapping[str, bytes] = field(default_factory=dict)  # outputs, by the name asked for
    console: str = ""  # the guest's serial console (kernel log)
    seconds: float = 0.0  # wall time of the whole boot


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def console_tail(console: str, lines: int = _TAIL_LINES) -> str:
    """The last lines of a console log, indented for an error message."""
    tail = [line.rstrip() for line in console.strip().splitlines()[-lines:]]
    return "\n".join("    " + line for line in tail) if tail else "    (empty)"


def _why_stopped(console: str, init_log: str) -> str:
    panic = _PANIC.search(console)
    if panic:
        return panic.group(0).strip()
    if init_log.strip():
        return "init: " + init_log.strip().splitlines()[-1]
    return "it stopped before running the command"


def _outputs(workdir: Path, names: Sequence[str]) -> tuple[dict[str, bytes], list[str]]:
    found, missing = {}, []
    for name in names:
        path = workdir / name
        if path.is_file():
            found[name] = path.read_bytes()
        else:
            missing.append(name)
    return found, missing


def collect(
    *,
    control: Path,
    workdir: Path,
    console_log: Path,
    outputs: Sequence[str],
    timed_out: bool,
    timeout: float,
    seconds: float,
    kernel_name: str,
    check: bool,
) -> GuestResult:
    """The guest's result, or the error that explains why there is none (see the module docstring)."""
    console = _read(console_log)
    init_log = _read(control / guest_init.INIT_LOG)
    booted = _read(control / guest_init.BOOTED).strip()
    stdout = _read(control / guest_init.STDOUT)
    stderr = _read(control / guest_init.STDERR)
    status_text = _read(control / guest_init.STATUS).strip()
    if not status_text:
        if timed_out:
            stage = "its command" if booted else "its boot"
            raise GuestTimeout(
                f"guest {kernel_name}: {stage} did not finish within {seconds:.0f} s; QEMU was stopped. "
                f"Console tail:\n{console_tail(console)}",
                console=console, stdout=stdout, stderr=stderr,
            )
        raise GuestBootError(
            f"guest {kernel_name} stopped without finishing its command ({_why_stopped(console, init_log)}). "
            f"Console tail:\n{console_tail(console)}",
            console=console,
        )
    returncode = int(status_text)
    files, missing = _outputs(workdir, outputs)
    result = GuestResult(booted or kernel_name, returncode, stdout, stderr, files, console, seconds)
    if returncode == TIMEOUT_STATUS:
        raise GuestTimeout(
            f"guest {result.kernel}: the command ran longer than {timeout:.0f} s and was stopped; "
            f"stderr tail:\n{console_tail(stderr)}",
            console=console, stdout=stdout, stderr=stderr,
        )
    if check and returncode != 0:
        raise GuestCommandFailed(
            f"guest {result.kernel}: the command exited with status {returncode}; stderr tail:\n{console_tail(stderr)}",
            result=result,
        )
    if check and missing:
        raise GuestCommandFailed(
            f"guest {result.kernel}: the command did not write {', '.join(missing)}", result=result
        )
    return result
