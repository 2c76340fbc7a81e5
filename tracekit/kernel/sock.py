"""The fields of `struct sock` that sock_reuseport.c reads and writes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tracekit.kernel.net import Net
    from tracekit.kernel.sock_reuseport import SockReuseport

# include/net/tcp_states.h
TCP_ESTABLISHED = 1
TCP_SYN_SENT = 2
TCP_SYN_RECV = 3
TCP_CLOSE = 7
TCP_LISTEN = 10
TCP_NEW_SYN_RECV = 12

IPPROTO_TCP = 6
IPPROTO_UDP = 17

PROTOCOLS = {"tcp": IPPROTO_TCP, "udp": IPPROTO_UDP}


@dataclass(eq=False)
class Sock:
    """A socket as sock_reuseport.c sees it. Identity is the object; `sk_id` is the trace's id."""

    sk_id: int
    sk_net: Net
    sk_protocol: int = IPPROTO_TCP
    sk_state: int = TCP_CLOSE
    sk_reuseport: bool = False
    sk_reuseport_cb: SockReuseport | None = None
    sk_incoming_cpu: int = -1
    sk_hash: int = 0
    hashed: bool = False

    def __repr__(self) -> str:
        return f"sk {self.sk_id}"


def sock_net(sk: Sock) -> Net:
    return sk.sk_net


def sk_unhashed(sk: Sock) -> bool:
    return not sk.hashed
