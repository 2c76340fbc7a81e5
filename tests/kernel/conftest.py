"""Shared builders for the sock_reuseport model tests: a namespace and listening sockets in it."""

from __future__ import annotations

from typing import Callable

import pytest

from tracekit.kernel.net import Net
from tracekit.kernel.profiles import BY_NAME
from tracekit.kernel.sock import IPPROTO_TCP, TCP_LISTEN, Sock
from tracekit.kernel.sock_reuseport import reuseport_add_sock, reuseport_alloc

MakeSock = Callable[..., Sock]
MakeGroup = Callable[..., list[Sock]]


@pytest.fixture
def net() -> Net:
    """A namespace with the newest profile (the kernel this machine runs)."""
    return Net()


@pytest.fixture
def net_5_14() -> Net:
    return Net(profile=BY_NAME["5.14"])


def _sock(net: Net, sk_id: int, protocol: int = IPPROTO_TCP, incoming_cpu: int = -1) -> Sock:
    return Sock(sk_id=sk_id, sk_net=net, sk_protocol=protocol, sk_state=TCP_LISTEN,
                sk_reuseport=True, sk_incoming_cpu=incoming_cpu, hashed=True)


@pytest.fixture
def make_sock() -> MakeSock:
    """`make_sock(net, sk_id, protocol=..., incoming_cpu=...)`: a hashed SO_REUSEPORT listener."""
    return _sock


@pytest.fixture
def make_group() -> MakeGroup:
    """`make_group(net, n)`: n listeners joined the way inet_reuseport_add_sock() joins them."""

    def build(net: Net, n: int, protocol: int = IPPROTO_TCP, first_id: int = 0,
              bind_inany: bool = False) -> list[Sock]:
        socks = [_sock(net, first_id + i, protocol) for i in range(n)]
        assert reuseport_alloc(socks[0], bind_inany) == 0
        for sk in socks[1:]:
            assert reuseport_add_sock(sk, socks[0], bind_inany) == 0
        return socks

    return build
