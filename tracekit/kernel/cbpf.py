"""Classic BPF as the kernel runs it for `SO_ATTACH_REUSEPORT_CBPF`.

The kernel converts a classic program to eBPF (`bpf_convert_filter()` in net/core/filter.c); this
interpreter gives the converted program's results:

- A and X start at 0; the ALU is 32 bits wide; shifts by X use the low 5 bits of X.
- Division or modulo by an X of 0 ends the program with 0.
- Packet loads are big-endian and relative to the payload (the skb data after `hdr_len` was
  pulled). A load the kernel cannot satisfy (`bpf_skb_load_helper_*()` fails) ends the program
  with 0. Negative offsets read relative to the network header (`SKF_NET_OFF`) or the link-layer
  header (`SKF_LL_OFF`): `tracekit.kernel.packet` rebuilds those headers from the trace row.
- Ancillary loads (`SKF_AD_OFF + ...`, `convert_bpf_extensions()`) read fields of the skb.

Where the trace lacks what a load needs (bytes past a truncated payload, an ancillary field it did
not record) the result cannot be known: `Unknown` is raised, never a guess. Header fields the
trace cannot know (an IP id, a checksum, a TTL) load as bits marked unknown (`Value`); the result
is `Unknown` only when a jump or the return value depends on them.
"""

from __future__ import annotations

import struct
from dataclasses import replace
from typing import Sequence

from tracekit.kernel.errno import EINVAL
from tracekit.kernel.packet import field_at
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
    return -EINVAL if classic_refusal(insns) is not None else 0


def classic_refusal(insns: Sequence[Insn]) -> str | None:
    """Why bpf_check_basics_ok() or bpf_check_classic() refuses the program (None: it does not)."""
    flen = len(insns)
    if flen == 0 or flen > BPF_MAXINSNS:
        return f"it has {flen} instructions, not 1..{BPF_MAXINSNS}"
    for pc, (code, jt, jf, k) in enumerate(insns):
        if code not in ALLOWED_CODES:
            return f"opcode {code:#06x} at pc {pc} is not one the kernel accepts"
        if code in (BPF_ALU | BPF_DIV | BPF_K, BPF_ALU | BPF_MOD | BPF_K) and k == 0:
            return f"it divides by a constant 0 at pc {pc}"
        if code in (BPF_ALU | BPF_LSH | BPF_K, BPF_ALU | BPF_RSH | BPF_K) and k >= 32:
            return f"it shifts by {k} at pc {pc}"
        if code in (BPF_LD | BPF_MEM, BPF_LDX | BPF_MEM, BPF_ST, BPF_STX) and k >= BPF_MEMWORDS:
            return f"scratch memory cell {k} at pc {pc} does not exist"
        if code == BPF_JMP | BPF_JA and k >= flen - pc - 1:
            return f"the jump at pc {pc} leaves the program"
        if code in _CONDITIONAL_JUMPS and (pc + jt + 1 >= flen or pc + jf + 1 >= flen):
            return f"the jump at pc {pc} leaves the program"
        if (code & 0x07 == BPF_LD and code & 0xE0 == BPF_ABS and _ancillary(k) is None
                and k >= SKF_AD_OFF & U32):
            return f"ancillary load {k:#x} at pc {pc} is unknown or unsupported"
    if insns[-1][0] not in (BPF_RET | BPF_K, BPF_RET | BPF_A):
        return "its last instruction is not a ret: it runs off its end"
    if _check_load_and_stores(insns):
        return "it reads a scratch memory cell no path has stored to"
    return None


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


def load_packet(skb: Skb, offset: int, size: int) -> tuple[int, int, str | None]:
    """bpf_skb_load_helper_{8,16,32}() at a (signed) offset from the payload: the big-endian value,
    the mask of its bits the trace cannot know, and the field they belong to. `bpf_skb_load_helper_convert_offset()` turns
    `SKF_NET_OFF + k` into k bytes from the network header and `SKF_LL_OFF + k` into k bytes from
    the link-layer header; the load fails (the program returns 0) past the end of the packet."""
    if offset >= 0:
        return _read_payload(skb, offset, size, offset), 0, None
    if offset < SKF_LL_OFF:
        raise _LoadFailed
    headers = skb.headers
    if callable(headers):
        headers = headers()
    if headers is None:
        which = "network" if offset >= SKF_NET_OFF else "link-layer"
        raise Unknown(f"the program reads the {which} header, which the trace does not have")
    if offset >= SKF_NET_OFF:
        position = headers.network + offset - SKF_NET_OFF
    else:
        position = offset - SKF_LL_OFF
    value = mask = 0
    field = None
    for i in range(position, position + size):
        if i < len(headers.data):
            byte, bits = headers.data[i], headers.unknown[i]
        elif headers.complete:
            byte, bits = _read_payload(skb, i - len(headers.data), 1, offset), 0
        elif i - headers.network >= MAX_PACKET:
            raise _LoadFailed
        else:
            raise Unknown(f"the program reads byte {i - headers.network} from the network "
                          "header on, past the TCP ports: the trace does not have the TCP "
                          "header's length")
        if bits and field is None:
            field = field_at(headers, i)
        value, mask = value << 8 | byte, mask << 8 | bits
    return value, mask, field


MAX_PACKET = 0x10000  # no IP packet reaches this far from its network header


def _read_payload(skb: Skb, at: int, size: int, offset: int) -> int:
    """Big-endian `size` bytes at `at` of the payload, which the trace may hold only the start of."""
    buf, full_len = skb.payload, skb.len
    if buf is not None and at + size <= len(buf):
        return int.from_bytes(buf[at : at + size], "big")
    if full_len is not None and at + size > full_len:
        raise _LoadFailed
    raise Unknown(f"the program reads {size} byte(s) at offset {_s32(offset)}, "
                  "beyond what the trace recorded of the payload")
def load_ancillary(skb: Skb, index: int, x: Value, a: Value) -> Value:
    """convert_bpf_extensions(): the value an `SKF_AD_OFF + index` load puts in A."""
    if index == SKF_AD_ALU_XOR_X:
        return _alu(BPF_ALU | BPF_XOR | BPF_X, a, x)
    field = {SKF_AD_PROTOCOL: skb.protocol, SKF_AD_CPU: skb.cpu,
             SKF_AD_QUEUE: skb.queue_mapping, SKF_AD_RXHASH: skb.rxhash}.get(index)
    if field is None:
        raise Unknown(f"the program loads {ANCILLARY[index]}, which the trace does not have")
    if index in (SKF_AD_PROTOCOL, SKF_AD_QUEUE):
        return field & 0xFFFF, 0
    return field & U32, 0


def bpf_prog_run(insns: Sequence[Insn], skb: Skb) -> int:
    """Run a classic program on `skb`; returns the u32 it returns (the socket index for reuseport)."""
    try:
        return _run(insns, skb)
    except _LoadFailed:
        return 0


Value = tuple[int, int]
"""A register or memory word: its value and the mask of its bits the trace cannot know (those bits
are 0 in the value). A program may load such bits and still decide: `ldb [SKF_NET_OFF]; rsh #4`
is the IP version whatever the traffic class. Only a jump or a return that depends on them makes
the result `Unknown`."""

_ZERO: Value = (0, 0)


def _may_load_headers(insns: Sequence[Insn]) -> bool:
    """Whether a packet load may reach in front of the payload (a negative or indirect offset;
    an ancillary load reads the skb, not the packet)."""
    return any(code & 0x07 in (BPF_LD, BPF_LDX) and (
        code & 0xE0 == BPF_IND or (code & 0xE0 in (BPF_ABS, BPF_MSH) and _s32(k) < 0
                                   and not (code & 0xE0 == BPF_ABS and _ancillary(k) is not None)))
        for code, _jt, _jf, k in insns)


def payload_reach(insns: Sequence[Insn]) -> tuple[int, bool] | None:
    """What a program can read of a packet when every packet load is at a fixed offset into the
    payload: `(reach, length)`, the bytes of the payload from its start that loads can touch and
    whether it loads the packet length. Its result is then a function of the first `reach` bytes
    of the payload (and of how many there are), the length if `length`, and the ancillary
    fields it loads. None when a load may reach the headers (a negative or indirect offset)."""
    reads = payload_reads(insns)
    if reads is None:
        return None
    offsets, length = reads
    return (offsets[-1] + 1 if offsets else 0), length


def payload_reads(insns: Sequence[Insn]) -> tuple[tuple[int, ...], bool] | None:
    """`payload_reach` byte by byte: `(offsets, length)`, the offsets of the payload bytes loads
    can touch (ascending) and whether it loads the packet length. Its result is then a function
    of those bytes, of which loads the payload is long enough for (its length up to the last
    offset), the length if `length`, and the ancillary fields it loads."""
    offsets: set[int] = set()
    length = False
    for code, _jt, _jf, k in insns:
        cls, mode = code & 0x07, code & 0xE0
        if cls not in (BPF_LD, BPF_LDX) or mode in (BPF_IMM, BPF_MEM):
            continue
        if mode == BPF_LEN:
            length = True
        elif mode == BPF_IND:
            return None
        elif cls == BPF_LD and mode == BPF_ABS and _ancillary(k) is not None:
            continue
        elif mode in (BPF_ABS, BPF_MSH):
            if _s32(k) < 0:
                return None
            size = 1 if mode == BPF_MSH else _SIZES.get(code & 0x18, 4)
            offsets.update(range(_s32(k), _s32(k) + size))
    return tuple(sorted(offsets)), length


def ancillary_loads(insns: Sequence[Insn]) -> frozenset[int]:
    """The SKF_AD_* fields (indices) a program loads: what it reads of the skb besides the
    packet."""
    return frozenset(index for code, _jt, _jf, k in insns
                     if code & 0x07 == BPF_LD and code & 0xE0 == BPF_ABS
                     and (index := _ancillary(k)) is not None)


class _Unknowable(Exception):
    """A jump, a return, an offset or a divisor depends on bits the trace cannot know."""


def _run(insns: Sequence[Insn], skb: Skb) -> int:
    fields: list[str] = []  # the header fields whose unknown bits were loaded, in order
    if callable(skb.headers) and _may_load_headers(insns):
        skb = replace(skb, headers=skb.headers())  # build them once for the whole run
    try:
        return _steps(insns, skb, fields)
    except _Unknowable:
        what = " and ".join(dict.fromkeys(fields)) or "bits the trace does not have"
        raise Unknown(f"the program's result depends on {what}, which the trace does not "
                      "have") from None


def _steps(insns: Sequence[Insn], skb: Skb, fields: list[str]) -> int:
    a = x = _ZERO
    mem = [_ZERO] * BPF_MEMWORDS
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
                if a[1]:
                    raise _Unknowable
                return a[0]
        elif cls == BPF_LD:
            a = _load(code, k, a, x, mem, skb, fields)
            continue
        elif cls == BPF_LDX:
            x = _loadx(code, k, mem, skb, fields)
            continue
        elif code == BPF_ST:
            mem[k] = a
            continue
        elif code == BPF_STX:
            mem[k] = x
            continue
        elif cls == BPF_ALU:
            result = _alu(code, a, x if code & BPF_X else (k & U32, 0))
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


def _load_operand(mode: int, k: int, mem: list[Value], skb: Skb) -> Value | None:
    """The loads A and X share: IMM, MEM and LEN; None for the others."""
    if mode == BPF_IMM:
        return k & U32, 0
    if mode == BPF_MEM:
        return mem[k]
    if mode == BPF_LEN:
        return _skb_len(skb), 0
    return None


def _packet(skb: Skb, offset: int, size: int, fields: list[str]) -> Value:
    value, mask, field = load_packet(skb, offset, size)
    if mask:
        fields.append(field or "a header field")
    return value & ~mask, mask


def _load(code: int, k: int, a: Value, x: Value, mem: list[Value], skb: Skb,
          fields: list[str]) -> Value:
    mode, size = code & 0xE0, code & 0x18
    value = _load_operand(mode, k, mem, skb)
    if value is not None:
        return value
    if mode == BPF_ABS:
        anc = _ancillary(k)
        if anc is not None:
            return load_ancillary(skb, anc, x, a)
        return _packet(skb, _s32(k), _SIZES[size], fields)
    if mode == BPF_IND:
        if x[1]:
            raise _Unknowable
        return _packet(skb, _s32(x[0] + k), _SIZES[size], fields)
    raise ValueError(f"classic BPF load opcode {code:#06x} is not one the kernel accepts")


def _loadx(code: int, k: int, mem: list[Value], skb: Skb, fields: list[str]) -> Value:
    mode = code & 0xE0
    value = _load_operand(mode, k, mem, skb)
    if value is not None:
        return value
    if mode == BPF_MSH:
        byte, mask = _packet(skb, _s32(k), 1, fields)
        return (byte & 0xF) << 2, (mask & 0xF) << 2
    raise ValueError(f"classic BPF ldx opcode {code:#06x} is not one the kernel accepts")


def _skb_len(skb: Skb) -> int:
    if skb.len is None:
        raise Unknown("the program loads the packet length, which the trace does not have")
    return skb.len & U32


def _alu(code: int, a: Value, src: Value) -> Value | None:
    """A op src on 32 bits; None for a division by zero. With unknown bits: AND, OR, XOR and
    shifts by a known amount keep the known ones; ADD, SUB, MUL and NEG the ones below the lowest
    unknown bit; DIV and MOD by a power of two are a shift and a mask, other divisions know
    nothing."""
    (av, am), (sv, sm) = a, src
    op = code & 0xF0
    if not am and not sm:
        result = _alu_known(op, av, sv, code)
        return None if result is None else (result, 0)
    if op == BPF_AND:
        mask = (am & (sv | sm)) | (sm & (av | am))
        return av & sv & ~mask, mask
    if op == BPF_OR:
        value = av | sv
        return value, (am | sm) & ~value
    if op == BPF_XOR:
        mask = am | sm
        return (av ^ sv) & ~mask, mask
    if op in (BPF_LSH, BPF_RSH):
        if sm & 31:
            return 0, U32
        shift = sv & 31
        if op == BPF_LSH:
            return (av << shift) & U32, (am << shift) & U32
        return av >> shift, am >> shift
    if op in (BPF_ADD, BPF_SUB, BPF_MUL, BPF_NEG):
        unknown = am | (sm if op != BPF_NEG else 0)
        exact = (unknown & -unknown) - 1  # the bits below the lowest unknown one
        return _alu_known(op, av, sv, code) & exact, U32 & ~exact
    if op in (BPF_DIV, BPF_MOD):
        if sm:
            if not sv:  # it may be 0, which ends the program
                raise _Unknowable
            return 0, U32
        if sv == 0:
            return None
        if sv & (sv - 1) == 0:  # a power of two: a mask or a shift
            if op == BPF_MOD:
                return _alu(BPF_ALU | BPF_AND | BPF_K, a, (sv - 1, 0))
            return _alu(BPF_ALU | BPF_RSH | BPF_K, a, (sv.bit_length() - 1, 0))
        return 0, U32
    raise ValueError(f"classic BPF ALU opcode {code:#06x} is not one the kernel accepts")


def _alu_known(op: int, a: int, src: int, code: int) -> int | None:
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


def _jump(code: int, jt: int, jf: int, k: int, a: Value, x: Value) -> int:
    op = code & 0xF0
    if op == BPF_JA:
        return k & U32
    (av, am), (sv, sm) = a, (x if code & BPF_X else (k & U32, 0))
    # the ranges A and src can take: unknown bits all 0, all 1
    if op == BPF_JEQ:
        taken = av == sv if not am | sm else (False if (av ^ sv) & ~(am | sm) else None)
    elif op == BPF_JGT:
        taken = True if av > sv | sm else False if av | am <= sv else None
    elif op == BPF_JGE:
        taken = True if av >= sv | sm else False if av | am < sv else None
    elif op == BPF_JSET:
        taken = True if av & sv else False if not (av | am) & (sv | sm) else None
    else:
        raise ValueError(f"classic BPF jump opcode {code:#06x} is not one the kernel accepts")
    if taken is None:
        raise _Unknowable
    return jt if taken else jf
