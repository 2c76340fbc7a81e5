"""The headers in front of a loopback packet's payload, as far as a trace knows them.

When reuseport runs a classic program (`run_bpf_filter()`), `skb->data` is the payload (the
transport header was pulled), the network header is the IPv4 or IPv6 header, and the link-layer
(MAC) header is set: loopback's `eth_header()` writes zero addresses and the EtherType, and
`eth_type_trans()` set `skb->mac_header` on receive. A load at `SKF_NET_OFF + k` reads byte k from
the network header on, one at `SKF_LL_OFF + k` byte k from the link-layer header on
(net/core/filter.c `bpf_skb_load_helper_convert_offset()`), through to the end of the packet.

From a trace row we know the family (IPv4-mapped addresses travel as IPv4), the protocol, the
addresses and ports and, for UDP, the payload length; so the version and header length, the
lengths, the protocol, the addresses and the ports are known. Fields the sender or the stack
chooses per packet (TOS and traffic class, flow label, IP id, flags, TTL and hop limit, checksums,
the TCP sequence numbers, flags, window and options) are not: `unknown` marks their bits. A TCP
header's length (its options) is not known either, so nothing past the TCP ports is.

Checked against the 6.18 kernel bit by bit (tests/kernel/test_packet.py): IPv4 `45 00 <len> <id>
40 00 40 11 <csum> <src> <dst>`, IPv6 `6<tc/flow label> <len> 11 40 <src> <dst>`, UDP
`<sport> <dport> <len> <csum>`, link layer `00*12 08 00` / `00*12 86 dd`.
"""

from __future__ import annotations

from functools import partial
from ipaddress import IPv4Address, IPv6Address

from tracekit.kernel.structs import IPPROTO_TCP, IPPROTO_UDP, Headers, Skb

ETH_HLEN = 14
ETH_P_IP, ETH_P_IPV6 = 0x0800, 0x86DD
IPV4_HLEN, IPV6_HLEN, UDP_HLEN = 20, 40, 8
TCP_PORTS = 4  # what is known of a TCP header: the ports; its length is not

# (offset, length, name) of the fields whose bits a trace cannot know, per header
_IPV4_UNKNOWN = ((1, 1, "the IPv4 TOS"), (4, 2, "the IPv4 identification"),
                 (6, 2, "the IPv4 flags and fragment offset"), (8, 1, "the IPv4 TTL"),
                 (10, 2, "the IPv4 header checksum"))
_IPV6_UNKNOWN = ((7, 1, "the IPv6 hop limit"),)
_UDP_UNKNOWN = ((6, 2, "the UDP checksum"),)


def loopback_skb(protocol: int, saddr: IPv4Address | IPv6Address, sport: int,
                 daddr: IPv4Address | IPv6Address, dport: int, payload: bytes | None,
                 cpu: int | None) -> Skb:
    """The skb reuseport's program sees for a packet of this flow over loopback: the payload (its
    length is the recorded payload's), the headers, `skb->protocol` (the EtherType, which
    `SKF_AD_PROTOCOL` loads) and the CPU."""
    size = len(payload) if payload is not None else None
    ethertype = ETH_P_IP if isinstance(daddr, IPv4Address) else ETH_P_IPV6
    # built when a program loads from them: most selections run no program
    headers = partial(loopback_headers, protocol, saddr, sport, daddr, dport, size)
    return Skb(payload=payload, len=size, protocol=ethertype, cpu=cpu, headers=headers)


def loopback_headers(protocol: int, saddr: IPv4Address | IPv6Address, sport: int,
                     daddr: IPv4Address | IPv6Address, dport: int,
                     payload_len: int | None) -> Headers:
    """The headers of a packet from `saddr:sport` to `daddr:dport` over loopback."""
    v4 = isinstance(daddr, IPv4Address)
    if v4:
        src, dst = _v4(saddr).packed, daddr.packed
    else:
        src, dst = IPv6Address(saddr).packed, daddr.packed
    udp = protocol == IPPROTO_UDP
    length = UDP_HLEN + payload_len if udp and payload_len is not None else None
    ports = sport.to_bytes(2, "big") + dport.to_bytes(2, "big")
    transport = ports + (length or 0).to_bytes(2, "big") + b"\0\0" if udp else ports
    transport_unknown = _mask(len(transport), _UDP_UNKNOWN if udp else ())
    if udp and length is None:
        transport_unknown = transport_unknown[:4] + b"\xff\xff" + transport_unknown[6:]
    if v4:
        total = IPV4_HLEN + length if length is not None else 0
        network = (bytes([0x45, 0]) + total.to_bytes(2, "big") + bytes(5) + bytes([protocol])
                   + bytes(2) + src + dst)
        network_unknown = _mask(IPV4_HLEN, _IPV4_UNKNOWN, unknown_length=length is None, at=2)
        ethertype = ETH_P_IP
    else:
        network = (bytes([0x60, 0, 0, 0]) + (length or 0).to_bytes(2, "big")
                   + bytes([protocol, 0]) + src + dst)
        network_unknown = (b"\x0f\xff\xff\xff"  # version known; traffic class, flow label not
                           + _mask(IPV6_HLEN, _IPV6_UNKNOWN, unknown_length=length is None,
                                   at=4)[4:])
        ethertype = ETH_P_IPV6
    link = bytes(12) + ethertype.to_bytes(2, "big")
    return Headers(data=link + network + transport,
                   unknown=bytes(ETH_HLEN) + network_unknown + transport_unknown,
                   network=ETH_HLEN, complete=udp)


def _v4(address: IPv4Address | IPv6Address) -> IPv4Address:
    if isinstance(address, IPv4Address):
        return address
    mapped = address.ipv4_mapped
    return mapped if mapped is not None else IPv4Address(0)


def _mask(size: int, fields, *, unknown_length: bool = False, at: int = 0) -> bytes:
    mask = bytearray(size)
    for offset, length, _name in fields:
        mask[offset:offset + length] = b"\xff" * length
    if unknown_length:
        mask[at:at + 2] = b"\xff\xff"
    return bytes(mask)


def field_at(h: Headers, position: int) -> str:
    """The name of the header field at `position` of `h.data` (for messages)."""
    return _field_names(h)[position] if position < len(h.data) else "the TCP header"


def _field_names(h: Headers) -> list[str]:
    names = ["the link-layer header"] * h.network
    ipv4 = h.data[h.network] >> 4 == 4
    size = IPV4_HLEN if ipv4 else IPV6_HLEN
    names += [("the IPv4 header" if ipv4 else "the IPv6 header")] * size
    for offset, length, name in (_IPV4_UNKNOWN if ipv4 else
                                 ((0, 4, "the IPv6 traffic class and flow label"),
                                  (4, 2, "the IPv6 payload length"), *_IPV6_UNKNOWN)):
        names[h.network + offset:h.network + offset + length] = [name] * length
    if ipv4:
        names[h.network + 2:h.network + 4] = ["the IPv4 total length"] * 2
    transport = len(h.data) - len(names)
    names += [("the UDP header" if h.complete else "the TCP header")] * transport
    if h.complete:
        start = h.network + size
        names[start + 4:start + 6] = ["the UDP length"] * 2
        names[start + 6:start + 8] = ["the UDP checksum"] * 2
    return names


__all__ = ["ETH_HLEN", "ETH_P_IP", "ETH_P_IPV6", "Headers", "field_at", "loopback_headers",
           "loopback_skb"]
