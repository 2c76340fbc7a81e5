"""The private network namespace a recording runs in: create it, bring loopback up, set sysctls,
read its MIB counters. Everything here runs in the forked recording child, never in the caller."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import os
import socket
import struct

from tracekit.errors import TracekitError

CLONE_NEWNET = 0x40000000
SIOCGIFFLAGS, SIOCSIFFLAGS = 0x8913, 0x8914
IFF_UP, IFF_RUNNING = 0x1, 0x40

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


class NamespaceError(TracekitError):
    """The machine does not let the recorder create or configure its network namespace."""


def enter_private_netns() -> None:
    """Move the calling process into a new network namespace with loopback up."""
    if _libc.unshare(CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        hint = "recording needs root (CAP_SYS_ADMIN) to create a network namespace"
        if err == errno.EINVAL:
            hint = "this kernel has no network namespaces (CONFIG_NET_NS)"
        raise NamespaceError(f"unshare(CLONE_NEWNET) failed: {os.strerror(err)}: {hint}")
    _loopback_up()


def _loopback_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        request = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(s, SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | IFF_UP | IFF_RUNNING))


def sysctl_path(name: str) -> str:
    return "/proc/sys/" + name.replace(".", "/")


def write_sysctl(name: str, value: int) -> int:
    """Write a sysctl of the current namespace; returns 0 or -errno as the spec's `ret`."""
    try:
        with open(sysctl_path(name), "w") as f:
            f.write(f"{value}\n")
    except OSError as err:
        return -(err.errno or errno.EIO)
    return 0


def read_sysctl(name: str) -> int:
    with open(sysctl_path(name)) as f:
        return int(f.read().split()[0])


def read_mib(prefix: str = "TcpExt") -> dict[str, int]:
    """Counters of /proc/net/netstat (this namespace's) for one MIB, e.g. TcpExt."""
    with open("/proc/net/netstat") as f:
        lines = f.read().splitlines()
    for names, values in zip(lines[::2], lines[1::2]):
        head, *keys = names.split()
        if head == f"{prefix}:":
            return dict(zip(keys, map(int, values.split()[1:])))
    return {}
