"""Flows as the trace names them: the 4-tuple from the listener's point of view, with IPv4-mapped
IPv6 addresses written as plain IPv4 so that a v6 listener's view and the packet's view agree."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass


def plain_address(addr: str) -> str:
    ip = ipaddress.ip_address(addr.split("%")[0])
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def family_of(addr: str) -> int:
    return ipaddress.ip_address(plain_address(addr)).version


@dataclass(frozen=True)
class Flow:
    laddr: str
    lport: int
    raddr: str
    rport: int

    @classmethod
    def of(cls, laddr: str, lport: int, raddr: str, rport: int) -> "Flow":
        return cls(plain_address(laddr), lport, plain_address(raddr), rport)

    def columns(self) -> dict:
        return {"laddr": self.laddr, "lport": self.lport, "raddr": self.raddr, "rport": self.rport}
