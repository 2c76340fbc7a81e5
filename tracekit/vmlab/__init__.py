"""vmlab: run a command on another real kernel, booted for the occasion under QEMU.

The guest boots KERNEL (TCG, `-cpu max`) with this machine's root file system as its own root,
read-only over 9p, so it runs the very programs, Python and tracekit installed here::

    from tracekit import vmlab

    result = vmlab.run_in_guest(
        "6.1",                                            # image path, release under /boot, or prefix
        vmlab.python_argv("-m", "tracekit", "record", "--random", "5", "-o", "t.parquet"),
        outputs=["t.parquet"],                            # files to hand back (relative to the work dir)
        timeout=600,                                      # seconds for the command (the boot has its own)
    )
    result.kernel, result.returncode, result.stdout, result.stderr   # `uname -r` in the guest, ...
    result.files["t.parquet"]                                        # bytes

    # several commands, background processes: give a shell script (run by /bin/sh -c)
    vmlab.run_in_guest("6.12", "bpftrace -e '...' > probe.txt & sleep 2; python3 job.py; kill %1",
                       outputs=["probe.txt"], env={"EXTRA": "1"}, modules=["veth"])

What the guest sees:
- `argv` runs as root (PID 1's child) in the work directory: `workdir` if given (a host
  directory, shared read-write at the same path, so inputs placed there are visible and outputs
  stay there), else a fresh temporary one whose `outputs` come back as bytes.
- Environment: exactly `guest_environment()` (PYTHONPATH = this process's `sys.path`, so the guest
  imports the same tracekit even from an uninstalled worktree; LANG), HOME on a tmpfs, then `env`.
  `python_argv(...)` starts this process's interpreter.
- Mounted: /proc, /sys, /dev, tmpfs on /run, /tmp writable through an overlay (the host's /tmp
  shows through, read-only), bpffs at /sys/fs/bpf, debugfs at /sys/kernel/debug, tracefs at
  /sys/kernel/tracing, cgroup2; `lo` is up; `modules` are loaded with modprobe (the guest
  kernel's modules must be installed under /lib/modules here). No other network device.
- `cpus` (default 2) CPUs, `memory_mb` (default 2048) of memory.

Errors (all `tracekit.errors.TracekitError`, so the CLI prints them and exits 2):
- `VMUnavailable`: QEMU is not installed; `KernelNotFound`: KERNEL names no image or release.
- `GuestBootError`: the guest stopped (kernel panic, failed init) before the command finished;
  the message carries the console's tail.
- `GuestTimeout`: the command ran longer than `timeout` (stopped in the guest, exit status 124),
  or the boot plus the command exceeded `timeout + boot_timeout` (QEMU killed). Nothing hangs.
- `GuestCommandFailed` (only with `check=True`, the default): a non-zero exit status or a missing
  output; `.result` holds the `GuestResult`. With `check=False` the result is returned as is.

`resolve_kernel(spec)` names the image and initrd a KERNEL spec picks; `unavailable_reason(kernel)`
says why a guest cannot run here (for skipping tests), None when it can.
"""

from __future__ import annotations

from tracekit.vmlab.errors import (
    GuestBootError,
    GuestCommandFailed,
    GuestTimeout,
    KernelNotFound,
    VMError,
    VMUnavailable,
)
from tracekit.vmlab.handback import GuestResult
from tracekit.vmlab.kernels import GuestKernel, installed_releases, resolve_kernel
from tracekit.vmlab.run import guest_environment, python_argv, run_in_guest, unavailable_reason

__all__ = [
    "GuestBootError",
    "GuestCommandFailed",
    "GuestKernel",
    "GuestResult",
    "GuestTimeout",
    "KernelNotFound",
    "VMError",
    "VMUnavailable",
    "guest_environment",
    "installed_releases",
    "python_argv",
    "resolve_kernel",
    "run_in_guest",
    "unavailable_reason",
]
