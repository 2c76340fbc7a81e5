"""Classic BPF programs a scenario may attach with SO_ATTACH_REUSEPORT_CBPF: raw instructions or a
few named ones (the programs of the kernel's own reuseport selftests)."""

from __future__ import annotations

import ctypes
import struct

from tracekit.errors import TracekitError
from tracekit.kernel.cbpf import (BPF_A, BPF_ABS, BPF_ALU, BPF_K, BPF_LD, BPF_MOD, BPF_RET, BPF_W,
                                  SKF_AD_CPU, SKF_AD_OFF, Insn, encode_sock_filter)

Instruction = Insn


def named_program(name: str) -> list[Instruction]:
    """`cpu`: return the CPU running selection (reuseport_bpf_cpu.c);
    `mod:N`: return the first payload word (network order) modulo N (reuseport_bpf.c)."""
    if name == "cpu":
        return [(BPF_LD | BPF_W | BPF_ABS, 0, 0, (SKF_AD_OFF + SKF_AD_CPU) & 0xFFFFFFFF), (BPF_RET | BPF_A, 0, 0, 0)]
    if name.startswith("mod:") and name[4:].isdigit():
        return [(BPF_LD | BPF_W | BPF_ABS, 0, 0, 0), (BPF_ALU | BPF_MOD | BPF_K, 0, 0, int(name[4:])), (BPF_RET | BPF_A, 0, 0, 0)]
    raise TracekitError(f"unknown classic BPF program {name!r}: use 'cpu', 'mod:N' or a list of [code, jt, jf, k]")


def program_bytes(insns: list[Instruction]) -> bytes:
    """The raw `struct sock_filter` array, 8 bytes an instruction in host order (the trace's `prog`)."""
    return encode_sock_filter([(code, jt, jf, k & 0xFFFFFFFF) for code, jt, jf, k in insns])


class SockFprog:
    """A `struct sock_fprog` for setsockopt; keep the object alive while the call runs."""

    def __init__(self, prog: bytes) -> None:
        self._filter = ctypes.create_string_buffer(prog, len(prog))
        self.value = struct.pack("=H6xQ", len(prog) // 8, ctypes.addressof(self._filter))
