"""eBPF steering programs a scenario attaches with SO_ATTACH_REUSEPORT_EBPF (step `op = "ebpf"`).

A steering program is a real BPF_PROG_TYPE_SK_REUSEPORT program (expected attach type
BPF_SK_REUSEPORT_SELECT), hand-assembled here, with a BPF_MAP_TYPE_REUSEPORT_SOCKARRAY map whose
index i holds the i-th socket of the step's `socks` list. Replay cannot run it: the trace names it
(the `setsockopt` row's `prog` is the UTF-8 name) and a Python policy registered under that name
stands in for it (`tracekit.recorder.policies` has the one for each program here).

`first-byte-steering` (N = the number of sockets in the map):
  - a UDP datagram with a payload: b = its first payload byte;
      b == 0xff: SK_PASS without selecting (the kernel falls back to its hash choice),
      b == 0xfe: SK_DROP (the datagram is dropped; a TCP SYN would be refused),
      otherwise: select map[b % N];
  - anything else (a TCP SYN, an empty datagram): select map[hash % N], `hash` being the
    kernel's flow hash in `sk_reuseport_md`.
  A selection that fails (an empty map slot: its socket has closed) passes without selecting.
"""

from __future__ import annotations

import os
import socket
import struct
from dataclasses import dataclass

from tracekit.recorder import bpf_syscall, ebpf_asm as a
from tracekit.recorder.observer import (BPF_PROG_TYPE_SK_REUSEPORT, BPF_SK_REUSEPORT_SELECT, MD_HASH, MD_IP_PROTOCOL,
                                       SK_PASS, SO_ATTACH_REUSEPORT_EBPF)
from tracekit.errors import TracekitError

SK_DROP = 0
PASS_BYTE, DROP_BYTE = 0xFF, 0xFE
UDP_HEADER = 8  # sk_reuseport_md data starts at the transport header
HELPER_SKB_LOAD_BYTES, HELPER_SK_SELECT_REUSEPORT = 26, 82
KEY, BYTE = -8, -16  # stack slots: the map key, the loaded payload byte


def first_byte_steering(sockarray_fd: int, n: int) -> bytes:
    """The `first-byte-steering` program over a sockarray of `n` sockets (see the module doc)."""
    return a.link([
        a.mov_reg(6, 1),
        a.load(1, 6, MD_IP_PROTOCOL, 4),
        a.jump_imm(a.JNE, 1, socket.IPPROTO_UDP, "by_hash"),
        a.mov_reg(1, 6),
        a.mov_imm(2, UDP_HEADER),
        a.mov_reg(3, 10),
        a.add_imm(3, BYTE),
        a.mov_imm(4, 1),
        a.call(HELPER_SKB_LOAD_BYTES),
        a.jump_imm(a.JNE, 0, 0, "by_hash"),  # no payload byte
        a.load(2, 10, BYTE, 1),
        a.jump_imm(a.JEQ, 2, PASS_BYTE, "pass"),
        a.jump_imm(a.JEQ, 2, DROP_BYTE, "drop"),
        a.mod_imm(2, n),
        a.goto("select"),
        "by_hash",
        a.load(2, 6, MD_HASH, 4),
        a.mod_imm(2, n),
        "select",
        a.store(10, KEY, 2, 4),
        a.mov_reg(1, 6),
        a.load_map_fd(2, sockarray_fd),
        a.mov_reg(3, 10),
        a.add_imm(3, KEY),
        a.mov_imm(4, 0),
        a.call(HELPER_SK_SELECT_REUSEPORT),  # a failed selection leaves none: SK_PASS falls back to the hash
        "pass",
        a.mov_imm(0, SK_PASS),
        a.exit_(),
        "drop",
        a.mov_imm(0, SK_DROP),
        a.exit_(),
    ])


PROGRAMS = {"first-byte-steering": first_byte_steering}


class SteeringError(TracekitError):
    """A steering program cannot be built or attached as the scenario asks."""


@dataclass(frozen=True)
class Steering:
    """A loaded steering program and its sockarray (their fds stay open for the session)."""

    name: str
    map_fd: int
    prog_fd: int

    def close(self) -> None:
        os.close(self.prog_fd)
        os.close(self.map_fd)


def load_steering(name: str, socks: list[socket.socket]) -> Steering:
    """Fill a REUSEPORT_SOCKARRAY with `socks` (index i = socks[i]) and load program `name` over it."""
    if name not in PROGRAMS:
        raise SteeringError(f"unknown eBPF steering program {name!r} (one of {', '.join(PROGRAMS)})")
    map_fd = bpf_syscall.create_map(bpf_syscall.BPF_MAP_TYPE_REUSEPORT_SOCKARRAY, 8, len(socks), "reuseport sockarray")
    try:
        for index, sock in enumerate(socks):
            bpf_syscall.update_elem(map_fd, index, struct.pack("<Q", sock.fileno()))
        prog_fd = bpf_syscall.load_program(BPF_PROG_TYPE_SK_REUSEPORT, BPF_SK_REUSEPORT_SELECT,
                                           PROGRAMS[name](map_fd, len(socks)), "tk_steering")
    except BaseException:
        os.close(map_fd)
        raise
    return Steering(name, map_fd, prog_fd)


def attach(steering: Steering, sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_EBPF, steering.prog_fd)
