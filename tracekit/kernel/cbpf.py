"""Classic BPF as the kernel runs it for `SO_ATTACH_REUSEPORT_CBPF`.

The kernel converts a classic program to eBPF (`bpf_convert_filter()` in net/core/filter.c); this
interpreter gives the converted program's results:

- A and X start at 0; the ALU is 32 bits wide; shifts by X use the low 5 bits of X.
- Division or modulo by an X of 0 ends the program with 0.
- Packet loads are big-endian and relative to the payload (the skb data after `hdr_len` was
  pulled). A load the kernel cannot satisfy (`bpf_skb_load_helper_*()` fails) ends the program
  with 0. Negative offsets read relative to the network header (`SKF_NET_OFF`) or the link-layer
  header (`SKF_LL_OFF`).
- Ancillary loads (`SKF_AD_OFF + ...`, `convert_bpf_extensions()`) read fields of the skb.

Where the trace lacks what a load needs (bytes past a truncated payload, a header or field it did
not record) the result cannot be known: `Unknown` is raised, never a guess.
"""

from __future__ import annotations

import struct
from typing import Sequence

from tracekit.kernel.errno import EINVAL
from tracekit.kernel.structs import Skb

Insn = tuple[int, int, int, int]

# include/uapi/linux/bpf_common.h
BPF_LD, BPF_LDX, BPF_ST, BPF_STX, BPF_ALU, BPF_JMP, BPF_RET, BPF_MISC = range(8)
BPF_W, BPF_H, BPF_B = 0x00, 0x08, 0x10
BPF_IMM, BPF_ABS, BPF_IND, BPF_MEM, BPF_LEN, BPF_MSH = 0x00, 0x20, 0x40, 0x60, 0x80, 0xA0
BPF_ADD, BPF_SUB, BPF_MUL, BPF_DIV, BPF_OR, BPF_AND = 0x00, 0x10, 0x20, 0x30, 0x40, 0x50
BPF_LSH, BPF_RSH, BPF_NEG, BPF_MOD, BPF_XOR = 0x60, 0x70, 0x80, 0x90, 0xA0
BPF_JA, BPF_JEQ, BPF_JGT, BPF_JGE, BPF_JSET = 0x00, 0x10, 0x20, 0x30, 0x40
BPF_K, BPF_X = 0x00, 0x08
BPF_A = 0x10
BPF_TAX, BPF_TXA = 0x00, 0x80
BPF_MEMWORDS = 16
BPF_MAXINSNS = 4096

# include/uapi/linux/filter.h
SKF_AD_OFF = -0x1000
SKF_AD_PROTOCOL = 0
SKF_AD_PKTTYPE = 4
SKF_AD_IFINDEX = 8
SKF_AD_NLATTR = 12
SKF_AD_NLATTR_NEST = 16
SKF_AD_MARK = 20
SKF_AD_QUEUE = 24
SKF_AD_HATYPE = 28
SKF_AD_RXHASH = 32
SKF_AD_CPU = 36
SKF_AD_ALU_XOR_X = 40
SKF_AD_VLAN_TAG = 44
SKF_AD_VLAN_TAG_PRESENT = 48
SKF_AD_PAY_OFFSET = 52
SKF_AD_RANDOM = 56
SKF_AD_VLAN_TPID = 60
SKF_AD_MAX = 64
SKF_NET_OFF = -0x100000
SKF_LL_OFF = -0x200000

ANCILLARY = {
    SKF_AD_PROTOCOL: "SKF_AD_PROTOCOL", SKF_AD_PKTTYPE: "SKF_AD_PKTTYPE",
    SKF_AD_IFINDEX: "SKF_AD_IFINDEX", SKF_AD_NLATTR: "SKF_AD_NLATTR",
    SKF_AD_NLATTR_NEST: "SKF_AD_NLATTR_NEST", SKF_AD_MARK: "SKF_AD_MARK",
    SKF_AD_QUEUE: "SKF_AD_QUEUE", SKF_AD_HATYPE: "SKF_AD_HATYPE",
    SKF_AD_RXHASH: "SKF_AD_RXHASH", SKF_AD_CPU: "SKF_AD_CPU",
    SKF_AD_ALU_XOR_X: "SKF_AD_ALU_XOR_X", SKF_AD_VLAN_TAG: "SKF_AD_VLAN_TAG",
    SKF_AD_VLAN_TAG_PRESENT: "SKF_AD_VLAN_TAG_PRESENT", SKF_AD_PAY_OFFSET: "SKF_AD_PAY_OFFSET",
    SKF_AD_RANDOM: "SKF_AD_RANDOM", SKF_AD_VLAN_TPID: "SKF_AD_VLAN_TPID",
}

U32 = 0xFFFFFFFF
_SIZES = {BPF_W: 4, BPF_H: 2, BPF_B: 1}
_CONDITIONAL_JUMPS = frozenset(
    BPF_JMP | op | src for op in (BPF_JEQ, BPF_JGT, BPF_JGE, BPF_JSET) for src in (BPF_K, BPF_X)
)
# chk_code_allowed(): the opcodes bpf_check_classic() accepts.
ALLOWED_CODES = frozenset(
    [BPF_ALU | op | src
     for op in (BPF_ADD, BPF_SUB, BPF_MUL, BPF_DIV, BPF_MOD, BPF_AND, BPF_OR, BPF_XOR, BPF_LSH,
                BPF_RSH)
     for src in (BPF_K, BPF_X)]
    + [BPF_ALU | BPF_NEG]
    + [BPF_LD | size | mode for size in (BPF_W, BPF_H, BPF_B) for mode in (BPF_ABS, BPF_IND)]
    + [BPF_LD | BPF_W | BPF_LEN, BPF_LD | BPF_IMM, BPF_LD | BPF_MEM]
    + [BPF_LDX | BPF_W | BPF_LEN, BPF_LDX | BPF_B | BPF_MSH, BPF_LDX | BPF_IMM, BPF_LDX | BPF_MEM]
    + [BPF_ST, BPF_STX, BPF_MISC | BPF_TAX, BPF_MISC | BPF_TXA, BPF_RET | BPF_K, BPF_RET | BPF_A]
    + [BPF_JMP | BPF_JA]
    + list(_CONDITIONAL_JUMPS)
)


class Unknown(Exception):
    """The program read something the trace does not have; its result cannot be known."""


class _LoadFailed(Exception):
    """`bpf_skb_load_helper_*()` returned -EFAULT: the converted program returns 0."""


def _s32(v: int) -> int:
    v &= U32
    return v - (1 << 32) if v & 0x80000000 else v


def decode_sock_filter(raw: bytes) -> tuple[Insn, ...]:
    """A `struct sock_filter` array (u16 code, u8 jt, u8 jf, u32 k; little-endian) as tuples."""
    if len(raw) % 8:
        raise ValueError(f"a sock_filter array is 8 bytes an instruction; got {len(raw)} bytes")
    return tuple(struct.iter_unpack("<HBBI", raw))


def encode_sock_filter(insns: Sequence[Insn]) -> bytes:
    """The inverse of `decode_sock_filter`."""
    return b"".join(struct.pack("<HBBI", *insn) for insn in insns)


def _ancillary(k: int) -> int | None:
    """bpf_anc_helper(): the SKF_AD_* index a `BPF_LD|BPF_ABS` with this k loads, if any."""
    off = _s32(k) - SKF_AD_OFF
    return off if off in ANCILLARY else None


def check_classic(insns: Sequence[Insn]) -> int:
    """bpf_check_basics_ok() + bpf_check_classic(): 0, or -EINVAL for a program the kernel refuses."""
    flen = len(insns)
    if flen == 0 or flen > BPF_MAXINSNS:
        return -EINVAL
    for pc, (code, jt, jf, k) in enumerate(insns):
        if code not in ALLOWED_CODES:
            return -EINVAL
        if code in (BPF_ALU | BPF_DIV | BPF_K, BPF_ALU | BPF_MOD | BPF_K) and k == 0:
            return -EINVAL
        if code in (BPF_ALU | BPF_LSH | BPF_K, BPF_ALU | BPF_RSH | BPF_K) and k >= 32:
            return -EINVAL
        if code in (BPF_LD | BPF_MEM, BPF_LDX | BPF_MEM, BPF_ST, BPF_STX) and k >= BPF_MEMWORDS:
            return -EINVAL
        if code == BPF_JMP | BPF_JA and k >= flen - pc - 1:
            return -EINVAL
        if code in _CONDITIONAL_JUMPS and (pc + jt + 1 >= flen or pc + jf + 1 >= flen):
            return -EINVAL
        if (code & 0x07 == BPF_LD and code & 0xE0 == BPF_ABS and _ancillary(k) is None
                and k >= SKF_AD_OFF & U32):
            # Ancillary operation unknown or unsupported
            return -EINVAL
    if insns[-1][0] not in (BPF_RET | BPF_K, BPF_RET | BPF_A):
        return -EINVAL
    return _check_load_and_stores(insns)


def _check_load_and_stores(insns: Sequence[Insn]) -> int:
    """Every scratch-memory load must follow a store to that cell on every path."""
    masks = [0xFFFF] * len(insns)
    memvalid = 0
    for pc, (code, jt, jf, k) in enumerate(insns):
        memvalid &= masks[pc]
        if code in (BPF_ST, BPF_STX):
            memvalid |= 1 << k
        elif code in (BPF_LD | BPF_MEM, BPF_LDX | BPF_MEM):
            if not memvalid & (1 << k):
                return -EINVAL
        elif code == BPF_JMP | BPF_JA:
            masks[pc + 1 + k] &= memvalid
            memvalid = 0xFFFF
        elif code in _CONDITIONAL_JUMPS:
            masks[pc + 1 + jt] &= memvalid
            masks[pc + 1 + jf] &= memvalid
            memvalid = 0xFFFF
    return 0


def _read(buf: bytes | None, full_len: int | None, offset: int, size: int, what: str) -> int:
    """Big-endian `size` bytes at `offset` of a buffer the trace may hold only the start of."""
    if offset >= 0 and buf is not None and offset + size <= len(buf):
        return int.from_bytes(buf[offset : offset + size], "big")
    if offset < 0 or (full_len is not None and offset + size > full_len):
        raise _LoadFailed
    raise Unknown(f"the program reads {size} byte(s) at {what} offset {offset}, "
                  "beyond what the trace recorded")


def load_packet(skb: Skb, offset: int, size: int) -> int:
    """bpf_skb_load_helper_{8,16,32}() at a (signed) offset from the payload."""
    if offset >= 0:
        return _read(skb.payload, skb.len, offset, size, "payload")
    if offset >= SKF_NET_OFF:
        # The network header and everything after it up to the end of the packet.
        if skb.network_header is None:
            raise Unknown("the program reads the network header (SKF_NET_OFF), "
                          "which the trace does not have")
        nh = skb.network_header
        buf = nh + skb.payload if skb.payload is not None else nh
        full = len(nh) + skb.len if skb.len is not None else None
        return _read(buf, full, offset - SKF_NET_OFF, size, "network header")
    if offset >= SKF_LL_OFF:
        raise Unknown("the program reads the link-layer header (SKF_LL_OFF), "
                      "which the trace does not have")
    raise _LoadFailed


def load_ancillary(skb: Skb, index: int, x: int, a: int) -> int:
    """convert_bpf_extensions(): the value an `SKF_AD_OFF + index` load puts in A."""
    if index == SKF_AD_ALU_XOR_X:
        return a ^ x
    field = {SKF_AD_PROTOCOL: skb.protocol, SKF_AD_CPU: skb.cpu,
             SKF_AD_QUEUE: skb.queue_mapping, SKF_AD_RXHASH: skb.rxhash}.get(index)
    if field is None:
        raise Unknown(f"the program loads {ANCILLARY[index]}, which the trace does not have")
    if index in (SKF_AD_PROTOCOL, SKF_AD_QUEUE):
        return field & 0xFFFF
    return field & U32


def bpf_prog_run(insns: Sequence[Insn], skb: Skb) -> int:
    """Run a classic program on `skb`; returns the u32 it returns (the socket index for reuseport)."""
    try:
        return _run(insns, skb)
    except _LoadFailed:
        return 0


def _run(insns: Sequence[Insn], skb: Skb) -> int:
    a = x = 0
    mem = [0] * BPF_MEMWORDS
    pc = 0
    while True:
        if not 0 <= pc < len(insns):
            raise ValueError(f"classic BPF program runs off its end at pc {pc}; "
                             "check it with check_classic()")
        code, jt, jf, k = insns[pc]
        pc += 1
        cls = code & 0x07
        if cls == BPF_RET:
            if code == BPF_RET | BPF_K:
                return k & U32
            if code == BPF_RET | BPF_A:
                return a
        elif cls == BPF_LD:
            a = _load(code, k, a, x, mem, skb)
            continue
        elif cls == BPF_LDX:
            x = _loadx(code, k, mem, skb)
            continue
        elif code == BPF_ST:
            mem[k] = a
            continue
        elif code == BPF_STX:
            mem[k] = x
            continue
        elif cls == BPF_ALU:
            result = _alu(code, a, x if code & BPF_X else k & U32)
            if result is None:  # division by X == 0
                return 0
            a = result
            continue
        elif cls == BPF_JMP:
            pc += _jump(code, jt, jf, k, a, x)
            continue
        elif code == BPF_MISC | BPF_TAX:
            x = a
            continue
        elif code == BPF_MISC | BPF_TXA:
            a = x
            continue
        raise ValueError(f"classic BPF opcode {code:#06x} at pc {pc - 1} is not one the kernel "
                         "accepts; check it with check_classic()")


def _load_operand(mode: int, k: int, mem: list[int], skb: Skb) -> int | None:
    """The loads A and X share: IMM, MEM and LEN; None for the others."""
    if mode == BPF_IMM:
        return k & U32
    if mode == BPF_MEM:
        return mem[k]
    if mode == BPF_LEN:
        return _skb_len(skb)
    return None


def _load(code: int, k: int, a: int, x: int, mem: list[int], skb: Skb) -> int:
    mode, size = code & 0xE0, code & 0x18
    value = _load_operand(mode, k, mem, skb)
    if value is not None:
        return value
    if mode == BPF_ABS:
        anc = _ancillary(k)
        if anc is not None:
            return load_ancillary(skb, anc, x, a)
        return load_packet(skb, _s32(k), _SIZES[size])
    if mode == BPF_IND:
        return load_packet(skb, _s32(x + k), _SIZES[size])
    raise ValueError(f"classic BPF load opcode {code:#06x} is not one the kernel accepts")


def _loadx(code: int, k: int, mem: list[int], skb: Skb) -> int:
    mode = code & 0xE0
    value = _load_operand(mode, k, mem, skb)
    if value is not None:
        return value
    if mode == BPF_MSH:
        return (load_packet(skb, _s32(k), 1) & 0xF) << 2
    raise ValueError(f"classic BPF ldx opcode {code:#06x} is not one the kernel accepts")


def _skb_len(skb: Skb) -> int:
    if skb.len is None:
        raise Unknown("the program loads the packet length, which the trace does not have")
    return skb.len & U32


def _alu(code: int, a: int, src: int) -> int | None:
    op = code & 0xF0
    if op == BPF_ADD:
        return (a + src) & U32
    if op == BPF_SUB:
        return (a - src) & U32
    if op == BPF_MUL:
        return (a * src) & U32
    if op in (BPF_DIV, BPF_MOD):
        if src == 0:
            return None
        return a // src if op == BPF_DIV else a % src
    if op == BPF_OR:
        return a | src
    if op == BPF_AND:
        return a & src
    if op == BPF_XOR:
        return a ^ src
    if op == BPF_LSH:
        return (a << (src & 31)) & U32
    if op == BPF_RSH:
        return a >> (src & 31)
    if op == BPF_NEG:
        return -a & U32
    raise ValueError(f"classic BPF ALU opcode {code:#06x} is not one the kernel accepts")


def _jump(code: int, jt: int, jf: int, k: int, a: int, x: int) -> int:
    op = code & 0xF0
    if op == BPF_JA:
        return k & U32
    src = x if code & BPF_X else k & U32
    if op == BPF_JEQ:
        taken = a == src
    elif op == BPF_JGT:
        taken = a > src
    elif op == BPF_JGE:
        taken = a >= src
    elif op == BPF_JSET:
        taken = bool(a & src)
    else:
        raise ValueError(f"classic BPF jump opcode {code:#06x} is not one the kernel accepts")
    return jt if taken else jf
