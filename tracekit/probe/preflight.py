"""What the running kernel must offer before `tracekit probe` can attach, checked up front.

Each check names what is missing and how to get it; `ProbeUnavailable` is a `TracekitError`, so
the CLI prints it and exits 2.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from tracekit.errors import TracekitError
from tracekit.probe.script import FUNCTIONS

__all__ = ["ProbeUnavailable", "check_probe_support", "BPFTRACE", "KALLSYMS", "BTF", "TRACEFS"]

BPFTRACE = "bpftrace"
KALLSYMS = Path("/proc/kallsyms")
BTF = Path("/sys/kernel/btf/vmlinux")
TRACEFS = (Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing"))
PROC_CONFIG = Path("/proc/config.gz")


class ProbeUnavailable(TracekitError):
    """This machine cannot run the probe; the message says what is missing."""


def check_probe_support(*, bpftrace: str | None = None, root: Path = Path("/")) -> str:
    """The bpftrace binary to run, or `ProbeUnavailable` naming everything that is missing.

    Needs: root (CAP_BPF and CAP_PERFMON at least: bpftrace loads programs and opens kprobes),
    the bpftrace program, kernel BTF (the probe reads `struct sock` fields by name), kprobes
    (CONFIG_KPROBES: the kernel lists its kprobes under tracefs or debugfs), and the functions of
    net/core/sock_reuseport.c in the kernel's symbol table.
    """
    missing: list[str] = []
    if os.geteuid() != 0:
        missing.append("root: the probe loads BPF programs and attaches kprobes (run it as root)")
    binary = bpftrace or shutil.which(BPFTRACE)
    if binary is None or not os.access(binary, os.X_OK):
        missing.append("bpftrace: not installed (Debian: apt-get install bpftrace)")
    if not (root / BTF.relative_to("/")).exists():
        missing.append(f"kernel BTF: {BTF} does not exist (a kernel built with CONFIG_DEBUG_INFO_BTF)")
    if not _kprobes_enabled(root):
        missing.append("kprobes: this kernel has no kprobes (CONFIG_KPROBES is off: no "
                       "kprobe_events in tracefs, no kprobe PMU in /sys/bus/event_source)")
    else:
        absent = _absent_functions(root)
        if absent:
            missing.append("kernel functions: " + ", ".join(absent) + " are not in /proc/kallsyms "
                           "(inlined or absent in this kernel)")
    if missing:
        raise ProbeUnavailable("cannot probe this kernel (" + os.uname().release + "): "
                               + "; ".join(missing))
    return binary  # type: ignore[return-value]


def _kprobes_enabled(root: Path) -> bool:
    if (root / "sys/bus/event_source/devices/kprobe").exists():
        return True
    return any((root / t.relative_to("/") / "kprobe_events").exists() for t in TRACEFS)


def _absent_functions(root: Path) -> list[str]:
    path = root / KALLSYMS.relative_to("/")
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []  # cannot tell: bpftrace will say
    present = set()
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[2] in FUNCTIONS:
            present.add(parts[2])
    return [name for name in FUNCTIONS if name not in present]
