"""A tiny eBPF assembler: just the instructions the observer and the steering programs need,
encoded as the kernel reads them."""

from __future__ import annotations

import struct
from dataclasses import dataclass

# instruction classes, sizes, modes and operations (include/uapi/linux/bpf_common.h, bpf.h)
LDX, ST, STX, ALU64, JMP = 0x01, 0x02, 0x03, 0x07, 0x05
W, H, B, DW = 0x00, 0x08, 0x10, 0x18
MEM, ATOMIC = 0x60, 0xC0
K, X = 0x00, 0x08
ADD, AND, MOD, MOV = 0x00, 0x50, 0x90, 0xB0
JEQ, JGT, JNE, CALL, EXIT = 0x10, 0x20, 0x50, 0x80, 0x90
FETCH = 0x01
PSEUDO_MAP_FD = 1
SIZES = {1: B, 2: H, 4: W, 8: DW}


def insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


def mov_imm(dst: int, imm: int) -> bytes:
    return insn(ALU64 | MOV | K, dst, imm=imm)


def mov_reg(dst: int, src: int) -> bytes:
    return insn(ALU64 | MOV | X, dst, src)


def add_imm(dst: int, imm: int) -> bytes:
    return insn(ALU64 | ADD | K, dst, imm=imm)


def and_imm(dst: int, imm: int) -> bytes:
    return insn(ALU64 | AND | K, dst, imm=imm)


def mod_imm(dst: int, imm: int) -> bytes:
    """dst = dst % imm (unsigned, 64-bit)."""
    return insn(ALU64 | MOD | K, dst, imm=imm)


def load(dst: int, src: int, off: int, size: int) -> bytes:
    return insn(LDX | MEM | SIZES[size], dst, src, off)


def store(dst: int, off: int, src: int, size: int) -> bytes:
    return insn(STX | MEM | SIZES[size], dst, src, off)


def store_imm(dst: int, off: int, imm: int, size: int) -> bytes:
    return insn(ST | MEM | SIZES[size], dst, off=off, imm=imm)


def atomic_fetch_add64(dst: int, off: int, src: int) -> bytes:
    """src = xadd(*(u64 *)(dst + off), src), returning the old value in src."""
    return insn(STX | ATOMIC | DW, dst, src, off, ADD | FETCH)


@dataclass(frozen=True)
class Jump:
    """A jump to a label, resolved by link()."""

    code: int
    dst: int
    src: int
    imm: int
    label: str


def jump_imm(op: int, dst: int, imm: int, label: str) -> Jump:
    return Jump(JMP | op | K, dst, 0, imm, label)


def jump_reg(op: int, dst: int, src: int, label: str) -> Jump:
    return Jump(JMP | op | X, dst, src, 0, label)


def goto(label: str) -> Jump:
    return Jump(JMP, 0, 0, 0, label)


def call(helper: int) -> bytes:
    return insn(JMP | CALL, imm=helper)


def exit_() -> bytes:
    return insn(JMP | EXIT)


def load_map_fd(dst: int, fd: int) -> bytes:
    """The two-slot ld_imm64 that the verifier rewrites into a map pointer."""
    return insn(0x18, dst, PSEUDO_MAP_FD, imm=fd) + insn(0)


def link(items: list[bytes | Jump | str]) -> bytes:
    """Assemble instructions, labels (str) and jumps to labels into program bytes."""
    labels, position = {}, 0
    for item in items:
        if isinstance(item, str):
            labels[item] = position
        else:
            position += 1 if isinstance(item, Jump) else len(item) // 8
    out, position = [], 0
    for item in items:
        if isinstance(item, str):
            continue
        if isinstance(item, Jump):
            item = insn(item.code, item.dst, item.src, labels[item.label] - position - 1, item.imm)
        position += len(item) // 8
        out.append(item)
    return b"".join(out)
