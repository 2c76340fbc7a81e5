"""`run_in_guest`: boot a kernel under QEMU, run one command in it, hand back its status and files."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from tracekit.vmlab.errors import GuestBootError, VMError
from tracekit.vmlab.guest_init import GuestJob, render_init
from tracekit.vmlab.handback import GuestResult, collect
from tracekit.vmlab.kernels import GuestKernel, resolve_kernel
from tracekit.vmlab.qemu import find_qemu, qemu_command

__all__ = ["run_in_guest", "guest_environment", "python_argv", "unavailable_reason"]

DEFAULT_TIMEOUT = 600.0
# TCG boots a Debian kernel and its initrd in 10-60 s, depending on how busy the host is.
DEFAULT_BOOT_TIMEOUT = 240.0
_PASSED_THROUGH = ("LANG", "LC_ALL", "TZ", "TRACEKIT_DEBUG")


def guest_environment() -> dict[str, str]:
    """The environment a guest command gets by default: this process's import path as PYTHONPATH
    (so the guest imports the very tracekit the caller imports, installed or not) and its locale."""
    paths = [os.path.abspath(p or os.getcwd()) for p in sys.path]
    env = {"PYTHONPATH": os.pathsep.join(dict.fromkeys(p for p in paths if os.path.isdir(p)))}
    env.update({k: os.environ[k] for k in _PASSED_THROUGH if k in os.environ})
    env.setdefault("LANG", "C.UTF-8")
    return env


def python_argv(*args: str) -> list[str]:
    """argv running this process's Python interpreter in the guest: `python_argv("-m", "tracekit", ...)`."""
    return [sys.executable, *args]


def unavailable_reason(kernel: str | Path | None = None) -> str | None:
    """Why a guest cannot be booted here (no QEMU, no such kernel), or None when it can."""
    try:
        find_qemu()
        if kernel is not None:
            resolve_kernel(kernel)
    except VMError as error:
        return str(error)
    return None


def run_in_guest(
    kernel: str | Path | GuestKernel,
    argv: Sequence[str] | str,
    *,
    outputs: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    workdir: str | Path | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    boot_timeout: float = DEFAULT_BOOT_TIMEOUT,
    modules: Sequence[str] = (),
    cpus: int = 2,
    memory_mb: int = 2048,
    check: bool = True,
) -> GuestResult:
    """Boot `kernel`, run `argv` in the guest as root, return its exit status, output and `outputs`.

    See the package docstring (`tracekit.vmlab`) for what the guest sees and the errors raised.
    """
    qemu = find_qemu()
    chosen = kernel if isinstance(kernel, GuestKernel) else resolve_kernel(kernel)
    words = ("/bin/sh", "-c", argv) if isinstance(argv, str) else tuple(str(word) for word in argv)
    if not words:
        raise ValueError("run_in_guest needs a command (argv is empty)")
    merged_env = guest_environment()
    merged_env.update(env or {})
    with tempfile.TemporaryDirectory(prefix="tracekit-vm-") as scratch:
        control = Path(scratch) / "control"
        control.mkdir()
        work = Path(workdir).resolve() if workdir is not None else Path(scratch) / "work"
        work.mkdir(parents=True, exist_ok=True)
        init = control / "init"
        init.write_text(render_init(GuestJob(words, str(work), merged_env, timeout, tuple(modules))))
        init.chmod(0o755)
        console_log = Path(scratch) / "console.log"
        command = qemu_command(
            chosen, init=init, control=control, workdir=work, console=console_log,
            cpus=cpus, memory_mb=memory_mb, qemu=qemu,
        )
        started = time.monotonic()
        timed_out, qemu_stderr = _run_qemu(command, timeout + boot_timeout)
        seconds = time.monotonic() - started
        try:
            return collect(
                control=control, workdir=work, console_log=console_log, outputs=outputs,
                timed_out=timed_out, timeout=timeout, seconds=seconds, kernel_name=str(chosen), check=check,
            )
        except GuestBootError as error:
            if qemu_stderr.strip():
                raise GuestBootError(f"{error}\nQEMU said: {qemu_stderr.strip()}", console=error.console) from None
            raise


def _run_qemu(command: list[str], limit: float) -> tuple[bool, str]:
    """Run QEMU until it exits or `limit` seconds pass (then kill it); (timed out, its stderr)."""
    process = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        _, stderr = process.communicate(timeout=limit)
        return False, stderr
    except subprocess.TimeoutExpired:
        process.kill()
        _, stderr = process.communicate()
        return True, stderr
    except BaseException:
        process.kill()
        process.wait()
        raise
