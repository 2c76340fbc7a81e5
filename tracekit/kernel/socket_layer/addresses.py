"""Local addresses as the lookups compare them: `sk_rcv_saddr` (IPv4 view) and `sk_v6_rcv_saddr`.

An AF_INET6 socket bound to `::` without IPV6_V6ONLY has an IPv4 view of INADDR_ANY (dual stack);
bound to an IPv4-mapped address it has that IPv4 address; bound to any other IPv6 address its IPv4
view is `LOOPBACK4_IPV6` (127.0.0.6), which no packet carries, so here it has none
(net/ipv6/af_inet6.c `__inet6_bind`). Traces write IPv4-mapped addresses as plain IPv4.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from ipaddress import IPv4Address, IPv6Address

IP = IPv4Address | IPv6Address

ANY = "any"
"""The listen/secondary hash bucket key shared by 0.0.0.0 and :: (`ipv6_portaddr_hash()` of `::`
equals `ipv4_portaddr_hash()` of INADDR_ANY)."""

IPV4_ANY = IPv4Address(0)
IPV6_ANY = IPv6Address(0)


@lru_cache(maxsize=1 << 16)
def parse_ip(text: str) -> IP:
    """A textual address; IPv4-mapped IPv6 comes back as IPv4, as the trace writes it.
    Memoized: a trace names few addresses, each thousands of times."""
    ip = ipaddress.ip_address(text.split("%")[0])
    if isinstance(ip, IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


@lru_cache(maxsize=1 << 16)
def normal_ip(text: str) -> str:
    """`parse_ip(text)` as text: the one spelling of an address that flows are keyed by."""
    return str(parse_ip(text))


@lru_cache(maxsize=1 << 16)
def ip_text(ip: IP) -> str:
    """`str(ip)`, memoized (IPv6 formatting is slow and lookups key buckets by it)."""
    return str(ip)


@lru_cache(maxsize=1 << 16)
def bucket_key(ip: IP) -> str:
    """`inet_lhash2_bucket_sk()` / `udp_portaddr_hash`: which secondary bucket a bound socket is in."""
    return ANY if ip.is_unspecified else ip_text(ip)


def v4_view(family: int, ip: IP | None) -> IPv4Address | None:
    """`sk_rcv_saddr`: what an IPv4 packet's destination must equal."""
    if ip is None:
        return None
    if isinstance(ip, IPv4Address):
        return ip
    if family == 6 and ip.is_unspecified:
        return IPV4_ANY
    return None


def v6_view(family: int, ip: IP | None) -> IPv6Address | None:
    """`sk_v6_rcv_saddr` of an AF_INET6 socket; AF_INET sockets have none."""
    if family != 6 or ip is None:
        return None
    if isinstance(ip, IPv4Address):
        return IPv6Address("::ffff:" + str(ip))
    return ip


def rcv_saddr_any(ip: IP | None) -> bool:
    """`inet_rcv_saddr_any()`: bound to the wildcard, which sets the group's `bind_inany`."""
    return ip is not None and ip.is_unspecified


@lru_cache(maxsize=1 << 16)
def format_endpoint(ip: IP | None, port: int | None) -> str:
    host = "?" if ip is None else (f"[{ip}]" if isinstance(ip, IPv6Address) else str(ip))
    return f"{host}:{'?' if port is None else port}"


def route_source(ip: IP, family: int) -> IP:
    """The source address `connect()` picks for a wildcard-bound socket.

    The recorder's namespace has only loopback, where the route to 127.0.0.0/8 has source
    127.0.0.1 and the route to ::1 has source ::1.
    """
    if isinstance(ip, IPv4Address):
        return IPv4Address("127.0.0.1")
    return IPv6Address("::1") if family == 6 else ip
