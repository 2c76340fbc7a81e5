"""The classic BPF interpreter against net/core/filter.c (bpf_convert_filter, bpf_check_classic,
convert_bpf_extensions, bpf_skb_load_helper_*, bpf_internal_load_pointer_neg_helper)."""

from __future__ import annotations

import pytest

from ipaddress import IPv4Address, IPv6Address

from tracekit.kernel import cbpf
from tracekit.kernel.bpf import Skb
from tracekit.kernel.packet import loopback_headers
from tracekit.kernel.structs import IPPROTO_TCP, IPPROTO_UDP
from tracekit.kernel.cbpf import (
    BPF_A, BPF_ABS, BPF_ADD, BPF_ALU, BPF_AND, BPF_B, BPF_DIV, BPF_H, BPF_IMM, BPF_IND, BPF_JA,
    BPF_JEQ, BPF_JGE, BPF_JGT, BPF_JMP, BPF_JSET, BPF_K, BPF_LD, BPF_LDX, BPF_LEN, BPF_LSH,
    BPF_MEM, BPF_MISC, BPF_MOD, BPF_MSH, BPF_MUL, BPF_NEG, BPF_OR, BPF_RET, BPF_RSH, BPF_ST,
    BPF_STX, BPF_SUB, BPF_TAX, BPF_TXA, BPF_W, BPF_X, BPF_XOR, SKF_AD_OFF, SKF_LL_OFF,
    SKF_NET_OFF, Unknown, bpf_prog_run, check_classic, decode_sock_filter, encode_sock_filter,
)

RET_A = (BPF_RET | BPF_A, 0, 0, 0)
FULL = Skb(payload=bytes(range(16)), len=16)


def u32(v: int) -> int:
    return v & 0xFFFFFFFF


def ld_imm(k):
    return (BPF_LD | BPF_IMM, 0, 0, u32(k))


def ldx_imm(k):
    return (BPF_LDX | BPF_IMM, 0, 0, u32(k))


def run(*insns, skb=FULL):
    prog = tuple(insns)
    assert check_classic(prog) == 0, prog
    return bpf_prog_run(prog, skb)


def anc(index):
    return (BPF_LD | BPF_W | BPF_ABS, 0, 0, u32(SKF_AD_OFF + index))


# --- returns, immediates, scratch memory, misc --------------------------------------------------

def test_ret_k_and_a_start_at_zero():
    """bpf_convert_filter: A and X are cleared first; RET K returns k, RET A returns A."""
    assert run((BPF_RET | BPF_K, 0, 0, 0xFFFFFFFF)) == 0xFFFFFFFF
    assert run(RET_A) == 0
    assert run((BPF_MISC | BPF_TXA, 0, 0, 0), RET_A) == 0


def test_imm_mem_tax_txa():
    """LD/LDX IMM, ST/STX to M[k], LD/LDX MEM, TAX, TXA."""
    assert run(ld_imm(7), (BPF_ST, 0, 0, 3), ld_imm(0), (BPF_LD | BPF_MEM, 0, 0, 3), RET_A) == 7
    assert run(ldx_imm(9), (BPF_STX, 0, 0, 15), (BPF_LDX | BPF_MEM, 0, 0, 15),
               (BPF_MISC | BPF_TXA, 0, 0, 0), RET_A) == 9
    assert run(ld_imm(5), (BPF_MISC | BPF_TAX, 0, 0, 0), ld_imm(0),
               (BPF_MISC | BPF_TXA, 0, 0, 0), RET_A) == 5


# --- ALU ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("op,a,operand,expected", [
    (BPF_ADD, 0xFFFFFFFF, 2, 1),
    (BPF_SUB, 1, 2, 0xFFFFFFFF),
    (BPF_MUL, 0x10000, 0x10000, 0),
    (BPF_DIV, 7, 2, 3),
    (BPF_MOD, 7, 3, 1),
    (BPF_OR, 0xF0, 0x0F, 0xFF),
    (BPF_AND, 0xF0, 0x3C, 0x30),
    (BPF_XOR, 0xFF, 0x0F, 0xF0),
    (BPF_LSH, 0x80000001, 1, 2),
    (BPF_RSH, 0x80000000, 31, 1),
])
def test_alu_32_bit(op, a, operand, expected):
    """Classic ALU ops become BPF_ALU32: results are u32; DIV/MOD unsigned."""
    assert run(ld_imm(a), (BPF_ALU | op | BPF_K, 0, 0, operand), RET_A) == expected
    assert run(ld_imm(a), ldx_imm(operand), (BPF_ALU | op | BPF_X, 0, 0, 0), RET_A) == expected


def test_neg():
    assert run(ld_imm(1), (BPF_ALU | BPF_NEG, 0, 0, 0), RET_A) == 0xFFFFFFFF


def test_division_by_x_zero_returns_zero():
    """bpf_convert_filter: DIV/MOD by X: `if (X == 0) { A = 0; exit; }`."""
    for op in (BPF_DIV, BPF_MOD):
        assert run(ld_imm(9), (BPF_ALU | op | BPF_X, 0, 0, 0), (BPF_RET | BPF_K, 0, 0, 5)) == 0


def test_shift_by_x_uses_low_five_bits():
    """ALU32 shifts by register mask the count with 31 (interpreter and x86 JIT)."""
    assert run(ld_imm(1), ldx_imm(33), (BPF_ALU | BPF_LSH | BPF_X, 0, 0, 0), RET_A) == 2


# --- jumps ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("op,a,operand,taken", [
    (BPF_JEQ, 5, 5, True), (BPF_JEQ, 5, 6, False),
    (BPF_JGT, 6, 5, True), (BPF_JGT, 5, 5, False),
    (BPF_JGE, 5, 5, True), (BPF_JGE, 4, 5, False),
    (BPF_JSET, 0b1010, 0b0010, True), (BPF_JSET, 0b1010, 0b0101, False),
    (BPF_JGT, 0xFFFFFFFF, 1, True),  # unsigned compare
])
def test_conditional_jumps(op, a, operand, taken):
    expected = 1 if taken else 2
    tail = ((BPF_RET | BPF_K, 0, 0, 1), (BPF_RET | BPF_K, 0, 0, 2))
    assert run(ld_imm(a), (BPF_JMP | op | BPF_K, 0, 1, operand), *tail) == expected
    assert run(ld_imm(a), ldx_imm(operand), (BPF_JMP | op | BPF_X, 0, 1, 0), *tail) == expected


def test_ja():
    assert run((BPF_JMP | BPF_JA, 0, 0, 1), (BPF_RET | BPF_K, 0, 0, 1),
               (BPF_RET | BPF_K, 0, 0, 2)) == 2


# --- packet loads ------------------------------------------------------------------------------------

def test_abs_loads_are_big_endian_from_payload():
    """BPF_ABS reads skb->data + k after hdr_len was pulled; H and W are be16/be32."""
    assert run((BPF_LD | BPF_B | BPF_ABS, 0, 0, 3), RET_A) == 3
    assert run((BPF_LD | BPF_H | BPF_ABS, 0, 0, 2), RET_A) == 0x0203
    assert run((BPF_LD | BPF_W | BPF_ABS, 0, 0, 12), RET_A) == 0x0C0D0E0F


def test_ind_loads_add_x():
    """BPF_IND: offset = (int)(X + k)."""
    assert run(ldx_imm(4), (BPF_LD | BPF_H | BPF_IND, 0, 0, 1), RET_A) == 0x0506
    # X + k wraps at 32 bits: 0xFFFFFFFF + 6 == 5.
    assert run(ldx_imm(0xFFFFFFFF), (BPF_LD | BPF_B | BPF_IND, 0, 0, 6), RET_A) == 5


def test_msh_loads_ip_header_length():
    """BPF_LDX|BPF_B|BPF_MSH: X = 4 * (P[k] & 0xf)."""
    skb = Skb(payload=b"\x45\x00", len=2)
    assert run((BPF_LDX | BPF_B | BPF_MSH, 0, 0, 0), (BPF_MISC | BPF_TXA, 0, 0, 0), RET_A,
               skb=skb) == 20


def test_len_loads():
    """BPF_LD|BPF_W|BPF_LEN and BPF_LDX|BPF_W|BPF_LEN: skb->len (of the pulled skb)."""
    skb = Skb(payload=b"abc", len=1000)
    assert run((BPF_LD | BPF_W | BPF_LEN, 0, 0, 0), RET_A, skb=skb) == 1000
    assert run((BPF_LDX | BPF_W | BPF_LEN, 0, 0, 0), (BPF_MISC | BPF_TXA, 0, 0, 0), RET_A,
               skb=skb) == 1000
    with pytest.raises(Unknown):
        run((BPF_LD | BPF_W | BPF_LEN, 0, 0, 0), RET_A, skb=Skb(payload=b"abc"))


def test_out_of_bounds_load_returns_zero():
    """bpf_skb_load_helper_*: -EFAULT -> `A = 0; exit`: the program returns 0 whatever follows."""
    prog = ((BPF_LD | BPF_W | BPF_ABS, 0, 0, 14), (BPF_RET | BPF_K, 0, 0, 7))
    assert run(*prog) == 0
    # Out of bounds for the packet's full length even though the trace holds only a prefix.
    assert run(*prog, skb=Skb(payload=b"ab", len=10)) == 0
    assert run((BPF_LD | BPF_B | BPF_ABS, 0, 0, 15), (BPF_RET | BPF_K, 0, 0, 7)) == 7


def test_truncated_payload_is_unknown():
    """A read past the recorded prefix of a longer packet cannot be answered."""
    prog = ((BPF_LD | BPF_W | BPF_ABS, 0, 0, 4), RET_A)
    with pytest.raises(Unknown):
        run(*prog, skb=Skb(payload=b"abcd", len=100))
    with pytest.raises(Unknown):
        run(*prog, skb=Skb(payload=b"abcd"))  # length unknown
    with pytest.raises(Unknown):
        run(*prog, skb=Skb())


UDP4 = loopback_headers(IPPROTO_UDP, IPv4Address("127.0.0.2"), 12345, IPv4Address("127.0.0.1"),
                        80, 2)


def net(k: int, size: int = BPF_B) -> tuple:
    return (BPF_LD | size | BPF_ABS, 0, 0, u32(SKF_NET_OFF + k))


def test_net_off_reads_network_header_then_payload():
    """bpf_skb_load_helper_convert_offset: SKF_NET_OFF + k is k bytes from the network header,
    through the transport header and the payload to the end of the packet; past it the load fails."""
    skb = Skb(payload=b"\xAA\xBB", len=2, headers=UDP4)
    assert run(net(0), RET_A, skb=skb) == 0x45
    assert run(net(2, BPF_H), RET_A, skb=skb) == 20 + 8 + 2  # IPv4 total length
    assert run(net(9), RET_A, skb=skb) == 17
    assert run(net(12, BPF_W), RET_A, skb=skb) == 0x7F000002
    assert run(net(20, BPF_H), RET_A, skb=skb) == 12345  # the UDP source port
    assert run(net(24, BPF_H), RET_A, skb=skb) == 10  # the UDP length
    assert run(net(29), RET_A, skb=skb) == 0xBB
    assert run(net(30), (BPF_RET | BPF_K, 0, 0, 9), skb=skb) == 0
    with pytest.raises(Unknown, match="network header"):
        run(net(0), RET_A, skb=FULL)


def test_ll_off_reads_the_link_layer_header_and_below_is_zero():
    """SKF_LL_OFF + k: loopback's Ethernet header (zero addresses, EtherType), then the packet;
    below SKF_LL_OFF the load fails."""
    skb = Skb(payload=b"\xAA\xBB", len=2, headers=UDP4)
    ll = (BPF_LD | BPF_H | BPF_ABS, 0, 0, u32(SKF_LL_OFF + 12))
    assert run(ll, RET_A, skb=skb) == 0x0800
    assert run((BPF_LD | BPF_W | BPF_ABS, 0, 0, u32(SKF_LL_OFF)), RET_A, skb=skb) == 0
    assert run((BPF_LD | BPF_B | BPF_ABS, 0, 0, u32(SKF_LL_OFF + 14)), RET_A, skb=skb) == 0x45
    with pytest.raises(Unknown, match="link-layer"):
        run(ll, RET_A)
    assert run(ldx_imm(SKF_LL_OFF - 1), (BPF_LD | BPF_B | BPF_IND, 0, 0, 0),
               (BPF_RET | BPF_K, 0, 0, 3)) == 0


def test_header_fields_the_trace_cannot_know_are_unknown_only_when_they_decide():
    skb = Skb(payload=b"\xAA\xBB", len=2, headers=UDP4)
    with pytest.raises(Unknown, match="the IPv4 TTL"):
        run(net(8), RET_A, skb=skb)
    with pytest.raises(Unknown, match="the IPv4 identification"):
        run(net(4, BPF_H), (BPF_JMP | BPF_JEQ | BPF_K, 0, 1, 0), ld_imm(1), RET_A, skb=skb)
    # the IP id's bits are masked off, shifted out, or cannot change the comparison
    assert run(net(2, BPF_W), (BPF_ALU | BPF_AND | BPF_K, 0, 0, 0xFFFF0000), RET_A,
               skb=skb) == 30 << 16
    assert run(net(2, BPF_W), (BPF_ALU | BPF_RSH | BPF_K, 0, 0, 16), RET_A, skb=skb) == 30
    assert run(net(4, BPF_W), (BPF_JMP | BPF_JGT | BPF_K, 1, 0, 0xFFFFFFFF), ld_imm(5), RET_A,
               skb=skb) == 5  # no value is above 0xFFFFFFFF
    assert run(net(8, BPF_H), (BPF_ALU | BPF_ADD | BPF_K, 0, 0, 1),
               (BPF_ALU | BPF_AND | BPF_K, 0, 0, 0xFF), RET_A, skb=skb) == 18  # TTL + protocol + 1
    with pytest.raises(Unknown):
        run(net(8, BPF_H), (BPF_ALU | BPF_ADD | BPF_K, 0, 0, 0xFF),
            (BPF_ALU | BPF_AND | BPF_K, 0, 0, 0x1FF), RET_A, skb=skb)  # the carry reaches the TTL


def test_ipv6_version_is_known_under_an_unknown_traffic_class():
    udp6 = loopback_headers(IPPROTO_UDP, IPv6Address("::1"), 40000, IPv6Address("::1"), 53, 4)
    skb = Skb(payload=b"abcd", len=4, headers=udp6)
    assert run(net(0), (BPF_ALU | BPF_RSH | BPF_K, 0, 0, 4), RET_A, skb=skb) == 6
    assert run(net(4, BPF_H), RET_A, skb=skb) == 12  # payload length: UDP header + 4
    assert run(net(6), RET_A, skb=skb) == 17
    assert run(net(40, BPF_H), RET_A, skb=skb) == 40000
    assert run((BPF_LD | BPF_H | BPF_ABS, 0, 0, u32(SKF_LL_OFF + 12)), RET_A, skb=skb) == 0x86DD
    with pytest.raises(Unknown, match="traffic class and flow label"):
        run(net(0), RET_A, skb=skb)


def test_tcp_knows_the_ports_not_what_follows():
    tcp = loopback_headers(IPPROTO_TCP, IPv4Address("127.0.0.1"), 40000, IPv4Address("127.0.0.1"),
                           80, 0)
    skb = Skb(payload=b"", len=0, headers=tcp)
    assert run(net(22, BPF_H), RET_A, skb=skb) == 80
    with pytest.raises(Unknown, match="TCP"):
        run(net(24), RET_A, skb=skb)
    with pytest.raises(Unknown, match="total length"):
        run(net(2, BPF_H), RET_A, skb=skb)


# --- ancillary loads ---------------------------------------------------------------------------------

def test_ancillary_fields_the_trace_carries():
    """convert_bpf_extensions: PROTOCOL (ntohs(skb->protocol)), QUEUE, RXHASH, CPU."""
    skb = Skb(protocol=0x0800, queue_mapping=3, rxhash=0xDEADBEEF, cpu=5)
    assert run(anc(cbpf.SKF_AD_PROTOCOL), RET_A, skb=skb) == 0x0800
    assert run(anc(cbpf.SKF_AD_QUEUE), RET_A, skb=skb) == 3
    assert run(anc(cbpf.SKF_AD_RXHASH), RET_A, skb=skb) == 0xDEADBEEF
    assert run(anc(cbpf.SKF_AD_CPU), RET_A, skb=skb) == 5
    # The load size does not matter for an ancillary load.
    assert run((BPF_LD | BPF_B | BPF_ABS, 0, 0, u32(SKF_AD_OFF + cbpf.SKF_AD_CPU)), RET_A,
               skb=skb) == 5


def test_ancillary_alu_xor_x():
    """SKF_AD_ALU_XOR_X: A ^= X."""
    assert run(ld_imm(0b1100), ldx_imm(0b1010), anc(cbpf.SKF_AD_ALU_XOR_X), RET_A) == 0b0110


@pytest.mark.parametrize("name", ["PKTTYPE", "IFINDEX", "NLATTR", "NLATTR_NEST", "MARK",
                                  "HATYPE", "VLAN_TAG", "VLAN_TAG_PRESENT", "PAY_OFFSET",
                                  "RANDOM", "VLAN_TPID"])
def test_ancillary_fields_the_trace_lacks_are_unknown(name):
    with pytest.raises(Unknown, match=f"SKF_AD_{name}"):
        run(anc(getattr(cbpf, f"SKF_AD_{name}")), RET_A)


@pytest.mark.parametrize("name", ["PROTOCOL", "QUEUE", "RXHASH", "CPU"])
def test_ancillary_field_missing_from_skb_is_unknown(name):
    with pytest.raises(Unknown):
        run(anc(getattr(cbpf, f"SKF_AD_{name}")), RET_A, skb=Skb())


# --- bpf_check_classic ---------------------------------------------------------------------------------

@pytest.mark.parametrize("prog", [
    (),                                                            # flen == 0
    ((BPF_RET | BPF_K, 0, 0, 0),) * 4097,                           # flen > BPF_MAXINSNS
    ((BPF_LD | BPF_W | BPF_ABS, 0, 0, 0),),                         # last insn not RET
    ((BPF_RET | BPF_X, 0, 0, 0),),                                  # RET X not allowed
    ((0xFFFF, 0, 0, 0), RET_A),                                     # unknown opcode
    ((BPF_ALU | BPF_DIV | BPF_K, 0, 0, 0), RET_A),                  # division by zero
    ((BPF_ALU | BPF_MOD | BPF_K, 0, 0, 0), RET_A),
    ((BPF_ALU | BPF_LSH | BPF_K, 0, 0, 32), RET_A),                 # shift >= 32
    ((BPF_ST, 0, 0, 16), RET_A),                                    # M[16]
    ((BPF_LD | BPF_MEM, 0, 0, 0), RET_A),                           # load before store
    ((BPF_JMP | BPF_JA, 0, 0, 1), RET_A),                           # jump past the end
    ((BPF_JMP | BPF_JEQ | BPF_K, 1, 0, 0), RET_A),                  # jt past the end
    ((BPF_LD | BPF_W | BPF_ABS, 0, 0, u32(SKF_AD_OFF + 2)), RET_A),  # no such ancillary
    ((BPF_LD | BPF_W | BPF_ABS, 0, 0, u32(SKF_AD_OFF + 64)), RET_A),
])
def test_check_classic_refuses(prog):
    assert check_classic(prog) == -22


def test_check_classic_memory_must_be_stored_on_every_path():
    """check_load_and_stores: a store on one branch only does not make M[k] valid after the join."""
    prog = ((BPF_JMP | BPF_JEQ | BPF_K, 0, 1, 0), (BPF_ST, 0, 0, 1),
            (BPF_LD | BPF_MEM, 0, 0, 1), RET_A)
    assert check_classic(prog) == -22
    both = ((BPF_ST, 0, 0, 1), (BPF_JMP | BPF_JEQ | BPF_K, 0, 1, 0), (BPF_ST, 0, 0, 1),
            (BPF_LD | BPF_MEM, 0, 0, 1), RET_A)
    assert check_classic(both) == 0


def test_check_classic_accepts_net_off_and_known_ancillary():
    assert check_classic(((BPF_LD | BPF_W | BPF_ABS, 0, 0, u32(SKF_NET_OFF)), RET_A)) == 0
    assert check_classic((anc(cbpf.SKF_AD_VLAN_TPID), RET_A)) == 0


# --- the trace's prog column ----------------------------------------------------------------------------

def test_decode_sock_filter_roundtrip():
    """struct sock_filter: u16 code, u8 jt, u8 jf, u32 k, little-endian host order."""
    raw = bytes.fromhex("2000000000000000" "9400000005000000" "1600000000000000")
    insns = decode_sock_filter(raw)
    assert insns == ((0x20, 0, 0, 0), (0x94, 0, 0, 5), (0x16, 0, 0, 0))
    assert encode_sock_filter(insns) == raw
    with pytest.raises(ValueError, match="8 bytes"):
        decode_sock_filter(b"\x00" * 9)


def test_running_an_unchecked_program_off_its_end_is_an_error():
    with pytest.raises(ValueError, match="check_classic"):
        bpf_prog_run((ld_imm(1),), FULL)


# -- what a program reads: the key replays memoize its answer on -----------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tracekit.kernel.cbpf import SKF_AD_CPU, SKF_AD_PROTOCOL, payload_reach  # noqa: E402


def test_payload_reach_of_fixed_loads():
    assert payload_reach(((BPF_RET | BPF_K, 0, 0, 3),)) == (0, False)
    assert payload_reach(((BPF_LD | BPF_H | BPF_ABS, 0, 0, 2), RET_A)) == (4, False)
    cpu = (BPF_LD | BPF_W | BPF_ABS, 0, 0, u32(SKF_AD_OFF + SKF_AD_CPU))
    assert payload_reach((cpu, (BPF_LDX | BPF_MSH, 0, 0, 9), (BPF_LD | BPF_LEN, 0, 0, 0),
                          RET_A)) == (10, True)
    # the headers (by a negative or an indirect offset): what it reads depends on the flow
    assert payload_reach(((BPF_LD | BPF_B | BPF_ABS, 0, 0, u32(SKF_NET_OFF + 9)), RET_A)) is None
    assert payload_reach(((BPF_LD | BPF_B | BPF_IND, 0, 0, 0), RET_A)) is None


_LOADS = st.one_of(
    st.builds(lambda size, k: (BPF_LD | size | BPF_ABS, 0, 0, k),
              st.sampled_from([BPF_B, BPF_H, BPF_W]), st.integers(0, 12)),
    st.just((BPF_LD | BPF_W | BPF_ABS, 0, 0, u32(SKF_AD_OFF + SKF_AD_CPU))),
    st.just((BPF_LD | BPF_W | BPF_ABS, 0, 0, u32(SKF_AD_OFF + SKF_AD_PROTOCOL))),
    st.just((BPF_LD | BPF_W | BPF_LEN, 0, 0, 0)),
    st.builds(lambda k: (BPF_LDX | BPF_MSH, 0, 0, k), st.integers(0, 12)),
    st.builds(lambda op, k: (BPF_ALU | op | BPF_K, 0, 0, k),
              st.sampled_from([BPF_ADD, BPF_AND, BPF_XOR, BPF_RSH]), st.integers(0, 7)),
    st.just((BPF_ALU | BPF_ADD | BPF_X, 0, 0, 0)),
    st.builds(lambda k: (BPF_JMP | BPF_JGT | BPF_K, 0, 1, k), st.integers(0, 255)),
)


@settings(max_examples=300, deadline=None)
@given(body=st.lists(_LOADS, max_size=6), payload=st.binary(max_size=14),
       other=st.binary(max_size=14), cpu=st.integers(0, 3))
def test_two_packets_alike_in_what_a_program_reads_get_one_answer(body, payload, other, cpu):
    """`payload_reach` names every input of the program's answer: two packets that agree on the
    first `reach` bytes of the payload (the length too when it loads it) and on the CPU get
    the same answer, or both an unknown one."""
    prog = tuple(body) + ((BPF_ALU | BPF_AND | BPF_K, 0, 0, 7), RET_A)
    reach, length = payload_reach(prog)
    twin = payload[:reach] + other[: max(0, len(payload) - reach) if length else len(other)]
    if len(payload) < reach:
        twin = payload  # it reads past the end of both: the same bytes or bust
    if length:
        twin = (twin + bytes(14))[:len(payload)]

    def answer(data: bytes):
        try:
            return bpf_prog_run(prog, Skb(payload=data, len=len(data), protocol=0x0800, cpu=cpu))
        except Unknown:
            return "unknown"

    assert answer(payload) == answer(twin)
