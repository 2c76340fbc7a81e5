"""The guest's init: a POSIX shell script the kernel runs as PID 1 (`init=`), rendered per run.

The guest's root is this machine's root, read-only over 9p, so the script (kept in the run's
control directory) and every program it starts are the host's own. As PID 1 it

1. mounts what a bare kernel lacks: /proc, /sys, /dev, a fresh tmpfs on /run, a writable overlay
   on /tmp (the host's /tmp beneath, read-only; a plain tmpfs where overlayfs is missing), bpffs at
   /sys/fs/bpf, debugfs at /sys/kernel/debug and tracefs at /sys/kernel/tracing (kprobes), cgroup2;
2. mounts the two writable shares: the control directory (tag `CONTROL_TAG`, at /run/vmlab) and
   the work directory (tag `WORK_TAG`) at the same path it has on the host;
3. brings `lo` up and loads the requested modules;
4. runs the command in the work directory with exactly the environment it was given, under
   `timeout`, its stdout/stderr/exit status written to the control directory;
5. syncs and powers off (sysrq `o`); should that fail, PID 1 exits, the kernel panics and QEMU
   (`-no-reboot`, `panic=-1`) stops anyway.

The whole script is one brace group, so the shell has read all of it before /tmp (where its file
may live) is covered.
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

__all__ = ["GuestJob", "render_init", "CONTROL_TAG", "WORK_TAG", "GUEST_CONTROL", "NINEP_OPTIONS"]

CONTROL_TAG = "tkvmctl"
WORK_TAG = "tkvmwork"
GUEST_CONTROL = "/run/vmlab"
NINEP_OPTIONS = "trans=virtio,version=9p2000.L,msize=262144"

# Files the init writes into the control directory; the host reads them back (handback.py).
BOOTED = "booted"
STDOUT = "stdout"
STDERR = "stderr"
STATUS = "status"
INIT_LOG = "init.log"

_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class GuestJob:
    """What the guest runs: `argv` in `workdir` (a host path, shared at the same path), with `env`."""

    argv: tuple[str, ...]
    workdir: str
    env: Mapping[str, str] = field(default_factory=dict)
    timeout: float = 600.0
    modules: tuple[str, ...] = ()


def _mount_lines() -> list[str]:
    return [
        "mountpoint -q /proc || mount -t proc proc /proc",
        "mountpoint -q /sys || mount -t sysfs sysfs /sys",
        "mountpoint -q /dev || mount -t devtmpfs devtmpfs /dev",
        "mkdir -p /dev/pts /dev/shm; mountpoint -q /dev/pts || mount -t devpts devpts /dev/pts",
        "mountpoint -q /dev/shm || mount -t tmpfs tmpfs /dev/shm",
        "mount -t tmpfs -o mode=0755 tmpfs /run",
        # the host's /tmp stays visible (a venv or checkout there), writable through an overlay
        "mkdir -p /run/vmlab-tmp/upper /run/vmlab-tmp/work",
        "mount -t overlay overlay -o lowerdir=/tmp,upperdir=/run/vmlab-tmp/upper,workdir=/run/vmlab-tmp/work /tmp"
        " || mount -t tmpfs -o mode=1777 tmpfs /tmp",
        "mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf",
        "mountpoint -q /sys/kernel/debug || mount -t debugfs debugfs /sys/kernel/debug",
        "if [ -d /sys/kernel/tracing ]; then mountpoint -q /sys/kernel/tracing || mount -t tracefs tracefs /sys/kernel/tracing; fi",
        "mountpoint -q /sys/fs/cgroup || mount -t cgroup2 cgroup2 /sys/fs/cgroup",
    ]


def render_init(job: GuestJob) -> str:
    """The init script for `job`: a shell script, every value quoted with `shlex.quote`."""
    q = shlex.quote
    control = GUEST_CONTROL
    env_words = " ".join(q(f"{k}={v}") for k, v in sorted(job.env.items()))
    command = " ".join(q(word) for word in job.argv)
    lines = [
        "#!/bin/sh",
        "# tracekit vmlab guest init (generated; see tracekit/vmlab/guest_init.py)",
        "{",
        f"PATH={_PATH}; export PATH",
        *(f"{line} 2>/dev/null" for line in _mount_lines()),
        f"mkdir -p {control} {q(job.workdir)}",
        f"mount -t 9p -o {NINEP_OPTIONS} {CONTROL_TAG} {control} || {{ echo 'vmlab: cannot mount the control share' >/dev/console; echo o >/proc/sysrq-trigger; }}",
        f"exec 3>>{control}/{INIT_LOG}",
        f"mount -t 9p -o {NINEP_OPTIONS} {WORK_TAG} {q(job.workdir)} >&3 2>&3 || echo 'cannot mount the work share' >&3",
        "ip link set lo up >&3 2>&3 || echo 'cannot bring lo up' >&3",
        *(f"modprobe {q(m)} >&3 2>&3 || echo {q('cannot load module ' + m)} >&3" for m in job.modules),
        f"mkdir -p /run/vmlab-home; uname -r >{control}/{BOOTED}",
        f"cd {q(job.workdir)} || echo 'cannot enter the work directory' >&3",
        f"env -i HOME=/run/vmlab-home PATH={_PATH} {env_words} timeout -k 5 {max(1, math.ceil(job.timeout))} {command} "
        f"</dev/null >{control}/{STDOUT} 2>{control}/{STDERR}",
        f"echo $? >{control}/{STATUS}.tmp && mv {control}/{STATUS}.tmp {control}/{STATUS}",
        "cd /; sync",
        f"umount {q(job.workdir)} {control} 2>/dev/null",
        "echo o >/proc/sysrq-trigger",
        "sleep 30",
        "}",
        "",
    ]
    return "\n".join(lines)
