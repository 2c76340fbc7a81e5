"""`ClassicAnswers.key` (what the socket walk memoizes a classic program's answer on) against the
program run on each packet: packets with one key get one answer, whatever else differs."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tracekit.kernel import cbpf
from tracekit.kernel.cbpf import (
    BPF_A, BPF_ABS, BPF_ADD, BPF_ALU, BPF_AND, BPF_B, BPF_H, BPF_JGT, BPF_JMP, BPF_K, BPF_LD, BPF_LDX,
    BPF_LEN, BPF_MSH, BPF_RET, BPF_RSH, BPF_W, BPF_X, BPF_XOR, SKF_AD_CPU, SKF_AD_OFF,
    SKF_AD_PROTOCOL, SKF_NET_OFF,
)
from tracekit.kernel.packet import loopback_skb
from tracekit.kernel.sock import IPPROTO_TCP, IPPROTO_UDP
from tracekit.kernel.socket_layer.addresses import parse_ip
from tracekit.replay.stretch import ClassicAnswers

U32 = 0xFFFFFFFF
RET_A = (BPF_RET | BPF_A, 0, 0, 0)

INSTRUCTIONS = [  # packet loads at fixed offsets, ancillary loads, arithmetic, a jump
    *[(BPF_LD | size | BPF_ABS, 0, 0, k) for size in (BPF_B, BPF_H, BPF_W) for k in (0, 1, 3, 6)],
    *[(BPF_LDX | BPF_MSH, 0, 0, k) for k in (0, 2, 7)],
    (BPF_LD | BPF_W | BPF_ABS, 0, 0, (SKF_AD_OFF + SKF_AD_CPU) & U32),
    (BPF_LD | BPF_W | BPF_ABS, 0, 0, (SKF_AD_OFF + SKF_AD_PROTOCOL) & U32),
    (BPF_LD | BPF_W | BPF_LEN, 0, 0, 0),
    (BPF_ALU | BPF_ADD | BPF_X, 0, 0, 0), (BPF_ALU | BPF_XOR | BPF_K, 0, 0, 5),
    (BPF_ALU | BPF_RSH | BPF_K, 0, 0, 1), (BPF_JMP | BPF_JGT | BPF_K, 0, 1, 2),
    (BPF_LD | BPF_B | BPF_ABS, 0, 0, (SKF_NET_OFF + 9) & U32),  # the headers: no key
]

_PACKETS = st.tuples(
    st.one_of(st.none(), st.binary(max_size=12).map(lambda b: bytes(x & 3 for x in b))),
    st.integers(0, 2),  # CPU
    st.sampled_from(["127.0.0.1", "::1"]),  # the destination (its IP version)
    st.integers(1000, 1003),  # the source port
)


def answer(prog: tuple, udp: bool, packet: tuple) -> int | None:
    """What `Route.cbpf_index` answers when it runs the program."""
    payload, cpu, daddr, sport = packet
    skb = loopback_skb(IPPROTO_UDP if udp else IPPROTO_TCP, parse_ip(daddr), sport,
                       parse_ip(daddr), 9000, payload, cpu)
    try:
        return cbpf.bpf_prog_run(prog, skb)
    except cbpf.Unknown:
        return None


@settings(max_examples=400, deadline=None)
@given(body=st.lists(st.sampled_from(INSTRUCTIONS), max_size=5), packets=st.lists(_PACKETS, min_size=2, max_size=12),
       udp=st.booleans())
def test_packets_with_one_key_get_one_answer(body, packets, udp):
    prog = tuple(body) + ((BPF_ALU | BPF_AND | BPF_K, 0, 0, 7), RET_A)
    memo = ClassicAnswers(prog)
    seen: dict = {}
    for packet in packets:
        payload, cpu, daddr, sport = packet
        key = memo.key((daddr, 9000, daddr, sport), payload, cpu)
        if key is None:
            assert cbpf.payload_reads(prog) is None
            continue
        got = answer(prog, udp, packet)
        assert seen.setdefault(key, (got, packet))[0] == got, (key, seen[key], packet)


def test_keys_name_only_the_bytes_a_program_reads():
    """`ldb [1]` reads one byte: payloads that differ elsewhere share its answers; one too
    short for it has its own (the load fails: the program returns 0)."""
    memo = ClassicAnswers(((BPF_LD | BPF_B | BPF_ABS, 0, 0, 1), RET_A))
    flow = ("127.0.0.1", 9000, "127.0.0.1", 1000)
    assert memo.key(flow, b"\x00\x05\x09", 0) == memo.key(flow, b"\x07\x05", 3)
    assert memo.key(flow, b"\x05", 0) != memo.key(flow, b"\x05\x00", 0)
    assert memo.key(flow, None, 0) != memo.key(flow, b"", 0)
    cpu = ClassicAnswers(((BPF_LD | BPF_W | BPF_ABS, 0, 0, (SKF_AD_OFF + SKF_AD_CPU) & U32),
                          RET_A))
    assert cpu.key(flow, b"a", 1) == cpu.key(flow, b"bc", 1) != cpu.key(flow, b"a", 2)
