"""include/net/sock.h: the helpers sock_reuseport.c calls on a `struct sock`.

The struct itself and the TCP states are in `tracekit.kernel.structs` (re-exported here).
"""

from __future__ import annotations

from tracekit.kernel.net import Net
from tracekit.kernel.structs import (
    IPPROTO_TCP,
    IPPROTO_UDP,
    PROTOCOLS,
    TCP_CLOSE,
    TCP_ESTABLISHED,
    TCP_LISTEN,
    TCP_NEW_SYN_RECV,
    TCP_SYN_RECV,
    TCP_SYN_SENT,
    Sock,
)

__all__ = ["IPPROTO_TCP", "IPPROTO_UDP", "PROTOCOLS", "TCP_CLOSE", "TCP_ESTABLISHED", "TCP_LISTEN",
           "TCP_NEW_SYN_RECV", "TCP_SYN_RECV", "TCP_SYN_SENT", "Sock", "sk_unhashed", "sock_net"]


def sock_net(sk: Sock) -> Net:
    return sk.sk_net


def sk_unhashed(sk: Sock) -> bool:
    return not sk.hashed
