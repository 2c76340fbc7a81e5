"""The QEMU command line that boots a guest on this machine's root file system.

- TCG, not KVM: nested KVM hangs on the machines this runs on; `-cpu max` gives the guest the
  instruction set extensions NumPy and pyarrow need (without it they die of an illegal instruction).
- The host's `/` is the guest's root, read-only over 9p (`multidevs=remap`: the host's mounts keep
  distinct inode numbers); two more 9p shares, writable, carry the control and work directories.
- The root is mounted `cache=loose`: it does not change during a run, and without the cache every
  import is a 9p round trip through an emulated CPU (importing pandas took minutes, not seconds).
- No display, no network device, no monitor; the serial console goes to a file, the kernel
  logs there (`console=ttyS0`) and a panic stops QEMU (`panic=-1`, `-no-reboot`).
- `no_timer_check`: an emulated CPU on a busy host is too slow for the kernel's check that the
  IO-APIC timer ticks, which then panics ("IO-APIC + timer doesn't work!"); seen here under load.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from tracekit.vmlab.errors import VMUnavailable
from tracekit.vmlab.guest_init import CONTROL_TAG, NINEP_OPTIONS, WORK_TAG
from tracekit.vmlab.kernels import GuestKernel

__all__ = ["QEMU", "ROOT_TAG", "find_qemu", "qemu_command"]

QEMU = "qemu-system-x86_64"
ROOT_TAG = "tkvmroot"


def find_qemu() -> str:
    """The QEMU binary, or VMUnavailable saying how to get it."""
    path = shutil.which(QEMU)
    if path is None:
        raise VMUnavailable(f"{QEMU} is not installed (Debian: apt-get install qemu-system-x86)")
    return path


def _share(path: Path | str, tag: str, *, readonly: bool) -> list[str]:
    escaped = str(path).replace(",", ",,")  # QEMU option syntax
    options = f"local,path={escaped},mount_tag={tag},security_model=none,multidevs=remap"
    return ["-virtfs", options + (",readonly=on" if readonly else "")]


def qemu_command(
    kernel: GuestKernel,
    *,
    init: Path,
    control: Path,
    workdir: Path,
    console: Path,
    cpus: int,
    memory_mb: int,
    qemu: str,
) -> list[str]:
    """argv of a QEMU that boots `kernel` with `init` as PID 1 and the shares the init mounts."""
    append = (
        f"root={ROOT_TAG} rootfstype=9p rootflags={NINEP_OPTIONS},cache=loose ro init={init} "
        "console=ttyS0 panic=-1 quiet loglevel=4 mitigations=off no_timer_check"
    )
    argv = [
        qemu,
        "-accel", "tcg", "-cpu", "max",
        "-smp", str(cpus), "-m", str(memory_mb),
        "-nodefaults", "-no-reboot", "-display", "none", "-monitor", "none",
        "-serial", f"file:{console}",
        "-kernel", str(kernel.image),
        *(["-initrd", str(kernel.initrd)] if kernel.initrd else []),
        "-append", append,
        "-device", "virtio-rng-pci",
        *_share("/", ROOT_TAG, readonly=True),
        *_share(control, CONTROL_TAG, readonly=False),
        *_share(workdir, WORK_TAG, readonly=False),
    ]
    return argv
