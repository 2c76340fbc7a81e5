"""The eBPF observer: a BPF_PROG_TYPE_SK_REUSEPORT program that records, for every reuseport
selection the kernel runs, the flow hash, the CPU and the flow's addresses, then returns SK_PASS
without selecting, so the kernel falls back to its own hash choice and behaves as if it were absent.

Records go into an array map used as a ring; slot i of the ring holds record number n where
i = n mod RING_SIZE, and n + 1 is stored in the record so that a reader sees which records exist.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from dataclasses import dataclass

from tracekit.recorder import bpf_syscall, ebpf_asm as a

OBSERVER_NAME = "sk_reuseport-hash/1"
KERNEL_NAME = "tk_observer"  # the program's name in the kernel (what `tracekit probe` sees)
BPF_PROG_TYPE_SK_REUSEPORT = 21
BPF_SK_REUSEPORT_SELECT = 39  # not SELECT_OR_MIGRATE: migration must stay the kernel's own
SO_ATTACH_REUSEPORT_EBPF = 52
SK_PASS = 1
BPF_HDR_START_NET = 1
HELPER_MAP_LOOKUP_ELEM, HELPER_GET_SMP_PROCESSOR_ID, HELPER_SKB_LOAD_BYTES_RELATIVE = 1, 8, 68

RING_SIZE = 1 << 14
# struct sk_reuseport_md offsets (include/uapi/linux/bpf.h)
MD_DATA, MD_DATA_END, MD_LEN, MD_ETH_PROTOCOL, MD_IP_PROTOCOL, MD_BIND_INANY, MD_HASH = 0, 8, 16, 20, 24, 28, 32
# record layout in the ring
RECORD = struct.Struct("<QIIIIIII4sI16s16s4x")  # number+1, hash, cpu, len, eth, ip, inany, pad, ports, flags, saddr, daddr
R_NUMBER, R_HASH, R_CPU, R_LEN, R_ETH, R_IP, R_INANY, R_PORTS, R_FLAGS, R_SADDR, R_DADDR = 0, 8, 12, 16, 20, 24, 28, 36, 40, 44, 60
HAVE_PORTS, HAVE_ADDRS = 1, 2
ETH_P_IP, ETH_P_IPV6 = socket.htons(0x0800), socket.htons(0x86DD)


@dataclass(frozen=True)
class SelectionRecord:
    """One reuseport selection the kernel ran, as the observer saw it (addresses from the packet)."""

    number: int
    hash: int
    cpu: int
    length: int
    family: int
    ip_protocol: int
    bind_inany: int
    saddr: str | None
    sport: int | None
    daddr: str | None
    dport: int | None


def observer_program(counter_fd: int, ring_fd: int) -> bytes:
    # r6 = ctx, r7 = record, r8 = record number, r9 = flags; r10 - 8 = map key scratch
    prog = [
        a.mov_reg(6, 1),
        a.store_imm(10, -8, 0, 4),
        *_lookup_or_out(counter_fd),
        a.mov_imm(8, 1),
        a.atomic_fetch_add64(0, 0, 8),
        a.mov_reg(1, 8),
        a.and_imm(1, RING_SIZE - 1),
        a.store(10, -8, 1, 4),
        *_lookup_or_out(ring_fd),
        a.mov_reg(7, 0),
        a.mov_imm(9, 0),
        a.load(1, 6, MD_HASH, 4),
        a.store(7, R_HASH, 1, 4),
        a.call(HELPER_GET_SMP_PROCESSOR_ID),
        a.store(7, R_CPU, 0, 4),
    ]
    for md_off, r_off in ((MD_LEN, R_LEN), (MD_ETH_PROTOCOL, R_ETH), (MD_IP_PROTOCOL, R_IP), (MD_BIND_INANY, R_INANY)):
        prog += [a.load(1, 6, md_off, 4), a.store(7, r_off, 1, 4)]
    prog += [
        # ports: direct packet access, data points at the transport header
        a.load(2, 6, MD_DATA, 8),
        a.load(3, 6, MD_DATA_END, 8),
        a.mov_reg(4, 2),
        a.add_imm(4, 4),
        a.jump_reg(a.JGT, 4, 3, "addrs"),
        a.load(1, 2, 0, 4),
        a.store(7, R_PORTS, 1, 4),
        a.mov_imm(9, HAVE_PORTS),
        "addrs",
        a.load(1, 6, MD_ETH_PROTOCOL, 4),
        a.jump_imm(a.JEQ, 1, ETH_P_IP, "ipv4"),
        a.jump_imm(a.JNE, 1, ETH_P_IPV6, "done"),
        *_load_net(8, R_SADDR, 16),
        a.jump_imm(a.JNE, 0, 0, "done"),
        *_load_net(24, R_DADDR, 16),
        a.jump_imm(a.JNE, 0, 0, "done"),
        a.goto("have_addrs"),
        "ipv4",
        *_load_net(12, R_SADDR, 4),
        a.jump_imm(a.JNE, 0, 0, "done"),
        *_load_net(16, R_DADDR, 4),
        a.jump_imm(a.JNE, 0, 0, "done"),
        "have_addrs",
        a.add_imm(9, HAVE_ADDRS),
        "done",
        a.store(7, R_FLAGS, 9, 4),
        a.add_imm(8, 1),
        a.store(7, R_NUMBER, 8, 8),  # written last: a reader never sees a half-filled record as new
        "out",
        a.mov_imm(0, SK_PASS),
        a.exit_(),
    ]
    return a.link(prog)


def _lookup_or_out(map_fd: int) -> list:
    """r0 = bpf_map_lookup_elem(map, r10 - 8); to "out" when there is no such element."""
    return [
        a.load_map_fd(1, map_fd),
        a.mov_reg(2, 10),
        a.add_imm(2, -8),
        a.call(HELPER_MAP_LOOKUP_ELEM),
        a.jump_imm(a.JEQ, 0, 0, "out"),
    ]


def _load_net(offset: int, record_off: int, length: int) -> list[bytes]:
    """bpf_skb_load_bytes_relative(ctx, offset, record + record_off, length, BPF_HDR_START_NET)."""
    return [
        a.mov_reg(1, 6),
        a.mov_imm(2, offset),
        a.mov_reg(3, 7),
        a.add_imm(3, record_off),
        a.mov_imm(4, length),
        a.mov_imm(5, BPF_HDR_START_NET),
        a.call(HELPER_SKB_LOAD_BYTES_RELATIVE),
    ]


class Observer:
    """Owns the maps and the loaded program; attach() it to a socket of each group to observe."""

    def __init__(self) -> None:
        self.counter_fd = bpf_syscall.create_array_map(8, 1)
        self.ring_fd = bpf_syscall.create_array_map(RECORD.size, RING_SIZE)
        self.prog_fd = bpf_syscall.load_program(
            BPF_PROG_TYPE_SK_REUSEPORT, BPF_SK_REUSEPORT_SELECT, observer_program(self.counter_fd, self.ring_fd), KERNEL_NAME
        )
        self._read = 0

    def attach(self, sock: socket.socket) -> None:
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_EBPF, self.prog_fd)

    def drain(self) -> list[SelectionRecord]:
        """Records written since the last drain, in the order the kernel wrote them."""
        total = struct.unpack("<Q", bpf_syscall.lookup_elem(self.counter_fd, 0, 8))[0]
        if total - self._read > RING_SIZE:
            raise bpf_syscall.BpfError(
                f"the observer ring overflowed ({total - self._read} selections since the last read, ring holds {RING_SIZE})"
            )
        records = [self._record(n) for n in range(self._read, total)]
        self._read = total
        return records

    def _record(self, number: int) -> SelectionRecord:
        raw = bpf_syscall.lookup_elem(self.ring_fd, number % RING_SIZE, RECORD.size)
        stored, hash_, cpu, length, eth, ip, inany, _pad, ports, flags, saddr, daddr = RECORD.unpack(raw)
        if stored != number + 1:
            raise bpf_syscall.BpfError(f"observer record {number} is incomplete (found record {stored - 1})")
        family = 4 if eth == ETH_P_IP else 6
        have_addrs = bool(flags & HAVE_ADDRS)
        sport = dport = None
        if flags & HAVE_PORTS:
            sport, dport = struct.unpack("!HH", ports)
        return SelectionRecord(
            number=number,
            hash=hash_,
            cpu=cpu,
            length=length,
            family=family,
            ip_protocol=ip,
            bind_inany=inany,
            saddr=_address(saddr, family) if have_addrs else None,
            sport=sport,
            daddr=_address(daddr, family) if have_addrs else None,
            dport=dport,
        )


def _address(raw: bytes, family: int) -> str:
    return str(ipaddress.ip_address(raw[:4] if family == 4 else raw))
