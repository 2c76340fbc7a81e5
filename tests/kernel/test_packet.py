"""The headers a classic program reads at SKF_NET_OFF / SKF_LL_OFF (tracekit.kernel.packet), and,
on the real kernel, every bit the model says it knows of them and of `SKF_AD_PROTOCOL`: a program `ldb [off]; rsh #bit; and #1;
ret a` on a group of two sockets shows the kernel's bit by the socket the packet reaches."""

from __future__ import annotations

import ctypes
import os
import socket
import struct
from ipaddress import IPv4Address, IPv6Address, ip_address

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tracekit.kernel.cbpf import (
    BPF_A, BPF_ABS, BPF_ADD, BPF_ALU, BPF_AND, BPF_B, BPF_H, BPF_JEQ, BPF_JGE, BPF_JGT, BPF_JMP,
    BPF_JSET, BPF_K, BPF_LD, BPF_LSH, BPF_MOD, BPF_MUL, BPF_OR, BPF_RET, BPF_RSH, BPF_SUB, BPF_W,
    BPF_XOR, SKF_AD_OFF, SKF_AD_PROTOCOL, SKF_LL_OFF, SKF_NET_OFF, Unknown, bpf_prog_run, check_classic, encode_sock_filter,
)
from tracekit.kernel.packet import ETH_HLEN, Headers, field_at, loopback_headers, loopback_skb
from tracekit.kernel.structs import IPPROTO_TCP, IPPROTO_UDP, Skb

SO_ATTACH_REUSEPORT_CBPF = 51
PAYLOAD = b"abcd"


def test_udp4_layout():
    h = loopback_headers(IPPROTO_UDP, IPv4Address("127.0.0.2"), 40000, IPv4Address("127.0.0.1"),
                         53, 4)
    net = h.data[ETH_HLEN:]
    assert h.data[:ETH_HLEN] == bytes(12) + b"\x08\x00"
    assert net[:4] == bytes([0x45, 0, 0, 32]) and net[9] == 17
    assert net[12:20] == bytes([127, 0, 0, 2, 127, 0, 0, 1])
    assert net[20:26] == struct.pack("!HHH", 40000, 53, 12)
    assert h.complete and len(h.data) == ETH_HLEN + 28
    unknown = [i for i, m in enumerate(h.unknown[ETH_HLEN:]) if m]
    assert unknown == [1, 4, 5, 6, 7, 8, 10, 11, 26, 27]  # TOS, id, flags, TTL, checksums
    assert field_at(h, ETH_HLEN + 8) == "the IPv4 TTL"


def test_udp6_and_mapped_and_tcp_layouts():
    h6 = loopback_headers(IPPROTO_UDP, IPv6Address("::1"), 40000, IPv6Address("::2"), 53, None)
    net = h6.data[ETH_HLEN:]
    assert h6.data[12:14] == b"\x86\xdd" and net[0] >> 4 == 6 and net[6] == 17
    assert h6.unknown[ETH_HLEN:ETH_HLEN + 8] == b"\x0f\xff\xff\xff\xff\xff\x00\xff"  # no length
    # an IPv4 packet to an IPv6 socket travels as IPv4 (addresses normalized by the trace)
    mapped = loopback_headers(IPPROTO_UDP, IPv4Address("127.0.0.1"), 1, IPv4Address("127.0.0.1"),
                              2, 0)
    assert mapped.data[12:14] == b"\x08\x00"
    tcp = loopback_headers(IPPROTO_TCP, IPv4Address("127.0.0.1"), 40000,
                           IPv4Address("127.0.0.1"), 80, 0)
    assert not tcp.complete and len(tcp.data) == ETH_HLEN + 24
    assert tcp.unknown[ETH_HLEN + 2:ETH_HLEN + 4] == b"\xff\xff"  # total length: options unknown


# --- the partly known interpreter never contradicts the known one ------------------------------

_LOADS = [(BPF_LD | size | BPF_ABS, 0, 0, (base + k) & 0xFFFFFFFF)
          for size in (BPF_W, BPF_H, BPF_B) for base, span in ((SKF_NET_OFF, 34), (SKF_LL_OFF, 48))
          for k in range(0, span, 3)]
_ALU = st.tuples(st.sampled_from([BPF_ADD, BPF_SUB, BPF_MUL, BPF_OR, BPF_AND, BPF_XOR, BPF_LSH,
                                  BPF_RSH, BPF_MOD]),
                 st.integers(1, 31) | st.sampled_from([0xFF, 0xF0, 0xFFFF0000, 0x7FFFFFFF, 6]))


@st.composite
def programs(draw):
    body = []
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["load", "alu", "jump"]))
        if kind == "load":
            body.append(draw(st.sampled_from(_LOADS)))
        elif kind == "alu":
            op, k = draw(_ALU)
            body.append((BPF_ALU | op | BPF_K, 0, 0, k))
        else:
            op = draw(st.sampled_from([BPF_JEQ, BPF_JGT, BPF_JGE, BPF_JSET]))
            body.append((BPF_JMP | op | BPF_K, 0, 1, draw(st.integers(0, 0xFFFF))))
            body.append((BPF_RET | BPF_K, 0, 0, draw(st.integers(0, 3))))
    return tuple(body) + ((BPF_RET | BPF_A, 0, 0, 0),)


@settings(max_examples=400, deadline=None)
@given(programs(), st.binary(min_size=42, max_size=42), st.sampled_from([4, 6]))
def test_what_the_model_decides_holds_for_every_value_of_the_unknown_bits(prog, fill, family):
    """Fill the unknown bits at random: where the partly known run answers, the fully known run of
    that packet answers the same."""
    assume(check_classic(prog) == 0)  # e.g. a shift by 32 or more is refused
    address = IPv4Address("127.0.0.1") if family == 4 else IPv6Address("::1")
    h = loopback_headers(IPPROTO_UDP, address, 40000, address, 53, len(PAYLOAD))
    filled = bytes(d | (m & fill[i % len(fill)]) for i, (d, m) in enumerate(zip(h.data, h.unknown)))
    concrete = Headers(filled, bytes(len(filled)), h.network, h.complete)
    try:
        partial = bpf_prog_run(prog, Skb(payload=PAYLOAD, len=len(PAYLOAD), headers=h))
    except Unknown:
        return
    assert partial == bpf_prog_run(prog, Skb(payload=PAYLOAD, len=len(PAYLOAD), headers=concrete))


# --- the real kernel -----------------------------------------------------------------------------

def _attach(sock: socket.socket, insns) -> None:
    raw = encode_sock_filter(insns)
    buf = ctypes.create_string_buffer(raw, len(raw))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF,
                    struct.pack("HL", len(insns), ctypes.addressof(buf)))


def _bit_program(k: int, bit: int):
    return [(BPF_LD | BPF_B | BPF_ABS, 0, 0, k & 0xFFFFFFFF), (BPF_ALU | BPF_RSH | BPF_K, 0, 0, bit),
            (BPF_ALU | BPF_AND | BPF_K, 0, 0, 1), (BPF_RET | BPF_A, 0, 0, 0)]


def _group(family: int, kind: int, addr: str, port: int) -> list[socket.socket]:
    socks = []
    for _ in range(2):
        s = socket.socket(family, kind)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s.bind((addr, port))
        if kind == socket.SOCK_STREAM:
            s.listen(64)
        s.setblocking(False)
        socks.append(s)
    return socks


def _which(socks: list[socket.socket], accept: bool) -> int:
    import select

    ready, _, _ = select.select(socks, [], [], 2.0)
    assert len(ready) == 1, "the packet reached no socket of the group"
    s = ready[0]
    if accept:
        conn, _ = s.accept()
        conn.close()
    else:
        s.recv(64)
    return socks.index(s)


def _sweep(proto: int, family: int, loads: list[tuple[int, int]]) -> list[int]:
    """In a fresh namespace: for each (offset, bit) the socket (0/1) a packet reached when the
    group's program returned that bit of the byte at `offset`. Each packet from its own port."""
    from tracekit.recorder import netns

    netns.enter_private_netns()
    fam = socket.AF_INET if family == 4 else socket.AF_INET6
    addr = "127.0.0.1" if family == 4 else "::1"
    stream = proto == IPPROTO_TCP
    socks = _group(fam, socket.SOCK_STREAM if stream else socket.SOCK_DGRAM, addr, 9000)
    out = []
    for n, (offset, bit) in enumerate(loads):
        _attach(socks[0], _bit_program(offset, bit))
        with socket.socket(fam, socket.SOCK_STREAM if stream else socket.SOCK_DGRAM) as client:
            client.bind((addr, 20000 + n))
            if stream:
                client.connect((addr, 9000))
            else:
                client.sendto(PAYLOAD, (addr, 9000))
            out.append(_which(socks, stream))
    for s in socks:
        s.close()
    return out


def _model_bits(proto: int, family: int, loads):
    """The model's answer for each probe: 0/1, or None where it says the trace cannot know."""
    address = ip_address("127.0.0.1" if family == 4 else "::1")
    payload = b"" if proto == IPPROTO_TCP else PAYLOAD
    answers = []
    for n, (offset, bit) in enumerate(loads):
        skb = loopback_skb(proto, address, 20000 + n, address, 9000, payload, 0)
        try:
            answers.append(bpf_prog_run(tuple(_bit_program(offset, bit)), skb))
        except Unknown:
            answers.append(None)
    return answers


@pytest.mark.kernel
@pytest.mark.parametrize("proto,family", [(IPPROTO_UDP, 4), (IPPROTO_UDP, 6), (IPPROTO_TCP, 4),
                                          (IPPROTO_TCP, 6)],
                         ids=["udp4", "udp6", "tcp4", "tcp6"])
def test_every_bit_the_model_knows_is_the_kernels(proto, family):
    if os.geteuid() != 0:
        pytest.skip("needs root (a network namespace) to attach programs on the real kernel")
    from tracekit.recorder.runner import run_in_namespace

    net_len = (20 if family == 4 else 40) + (8 + len(PAYLOAD) if proto == IPPROTO_UDP else 4)
    offsets = [SKF_LL_OFF + p for p in range(ETH_HLEN + net_len + 1)]
    offsets += [SKF_NET_OFF + p for p in range(net_len + 1)]
    loads = [(offset, bit) for offset in offsets for bit in range(8)]
    loads += [(SKF_AD_OFF + SKF_AD_PROTOCOL, bit) for bit in range(16)]  # skb->protocol
    kernel = run_in_namespace(_sweep, proto, family, loads)
    model = _model_bits(proto, family, loads)
    wrong = [(hex(o & 0xFFFFFFFF), b, m, k) for (o, b), m, k in zip(loads, model, kernel)
             if m is not None and m != k]
    assert wrong == []
    known = sum(m is not None for m in model)
    assert known >= len(loads) * (0.7 if proto == IPPROTO_UDP else 0.5)
