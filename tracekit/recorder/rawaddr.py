"""bind() and connect() with the address a scenario names, even of the other family.

Python resolves the address for the socket's own family, so an IPv4 address on an AF_INET6 socket
(or the reverse) fails in getaddrinfo() with a gaierror, whose code is no errno, before the kernel
sees anything. The kernel takes such addresses and decides: udpv6_pre_connect() connects an
AF_INET6 socket to a `sockaddr_in` as to its IPv4-mapped address (-EAFNOSUPPORT if IPV6_V6ONLY),
inet6_bind() and tcp_v6_connect() refuse one shorter than `sockaddr_in6` with -EINVAL. So the
recorder hands the kernel the `sockaddr` of the address's own family with the raw syscall and
records what it answers.
"""

from __future__ import annotations

import ctypes
import errno
import ipaddress
import socket
import struct

from tracekit.recorder.scenario import ScenarioError

_libc = ctypes.CDLL(None, use_errno=True)


def family_of_text(addr: str) -> int:
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def sockaddr(addr: str, port: int) -> bytes:
    """`struct sockaddr_in` or `struct sockaddr_in6` (scope 0) for a textual address."""
    family = family_of_text(addr)
    if family == socket.AF_INET:
        return struct.pack("=H", family) + struct.pack("!H", port) + socket.inet_pton(family, addr) + bytes(8)
    return struct.pack("=H", family) + struct.pack("!HI", port, 0) + socket.inet_pton(family, addr) + struct.pack("=I", 0)


def call(sock: socket.socket, op: str, addr: str, port: int) -> int:
    """sock.bind / sock.connect to (addr, port); the kernel's answer as the trace's `ret`: 0 or -errno."""
    try:
        ipaddress.ip_address(addr)
    except ValueError:
        raise ScenarioError(f"{op} to {addr!r}: the recorder takes IP addresses only, no names or scopes") from None
    try:
        if family_of_text(addr) == sock.family:
            getattr(sock, op)((addr, port))
            return 0
    except OSError as err:
        return -(err.errno or errno.EIO)
    raw = sockaddr(addr, port)
    function = {"bind": _libc.bind, "connect": _libc.connect}[op]
    if function(sock.fileno(), ctypes.c_char_p(raw), len(raw)) == 0:
        return 0
    return -(ctypes.get_errno() or errno.EIO)
