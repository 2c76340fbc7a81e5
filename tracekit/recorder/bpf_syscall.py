"""bpf(2) from Python through ctypes: create maps, look elements up and update them, load programs."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import platform

from tracekit.errors import TracekitError

_SYSCALL_BPF = {"x86_64": 321, "aarch64": 280}
_ATTR_SIZE = 128
BPF_MAP_CREATE, BPF_MAP_LOOKUP_ELEM, BPF_MAP_UPDATE_ELEM, BPF_PROG_LOAD = 0, 1, 2, 5
BPF_MAP_TYPE_ARRAY, BPF_MAP_TYPE_REUSEPORT_SOCKARRAY = 2, 20
BPF_ANY = 0

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


class BpfError(TracekitError):
    """A bpf(2) call failed; the message says which call and why."""


def _syscall_number() -> int:
    machine = platform.machine()
    if machine not in _SYSCALL_BPF:
        raise BpfError(f"the eBPF observer supports x86_64 and aarch64, not {machine}")
    return _SYSCALL_BPF[machine]


def bpf(cmd: int, attr: ctypes.Array) -> int:
    ret = _libc.syscall(_syscall_number(), cmd, ctypes.byref(attr), _ATTR_SIZE)
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return ret


def _attr(*fields: tuple[int, str, int]) -> ctypes.Array:
    buf = (ctypes.c_ubyte * _ATTR_SIZE)()
    for offset, fmt, value in fields:
        ctype = {"I": ctypes.c_uint32, "Q": ctypes.c_uint64}[fmt]
        ctype.from_buffer(buf, offset).value = value
    return buf


def _explain(err: OSError, what: str) -> BpfError:
    if err.errno in (errno.EPERM, errno.EACCES):
        return BpfError(f"{what} was refused ({err.strerror}): recording needs CAP_BPF and CAP_NET_ADMIN (run as root)")
    if err.errno == errno.ENOSYS:
        return BpfError(f"{what} failed: this kernel has no bpf(2) system call (CONFIG_BPF_SYSCALL)")
    return BpfError(f"{what} failed: {err.strerror}")


def create_map(map_type: int, value_size: int, max_entries: int, what: str) -> int:
    """A map with 4-byte (u32 index) keys; `what` names it in errors."""
    attr = _attr((0, "I", map_type), (4, "I", 4), (8, "I", value_size), (12, "I", max_entries))
    try:
        return bpf(BPF_MAP_CREATE, attr)
    except OSError as err:
        raise _explain(err, f"creating a {what}") from None


def create_array_map(value_size: int, max_entries: int) -> int:
    return create_map(BPF_MAP_TYPE_ARRAY, value_size, max_entries, "BPF array map")


def update_elem(map_fd: int, key: int, value: bytes) -> None:
    """map[key] = value (BPF_ANY)."""
    key_buf = ctypes.c_uint32(key)
    value_buf = ctypes.create_string_buffer(value, len(value))
    attr = _attr((0, "I", map_fd), (8, "Q", ctypes.addressof(key_buf)), (16, "Q", ctypes.addressof(value_buf)),
                 (24, "Q", BPF_ANY))
    try:
        bpf(BPF_MAP_UPDATE_ELEM, attr)
    except OSError as err:
        raise _explain(err, f"writing element {key} of a BPF map") from None


def lookup_elem(map_fd: int, key: int, value_size: int) -> bytes:
    key_buf = ctypes.c_uint32(key)
    value = ctypes.create_string_buffer(value_size)
    attr = _attr((0, "I", map_fd), (8, "Q", ctypes.addressof(key_buf)), (16, "Q", ctypes.addressof(value)))
    try:
        bpf(BPF_MAP_LOOKUP_ELEM, attr)
    except OSError as err:
        raise _explain(err, f"reading element {key} of a BPF map") from None
    return value.raw


def load_program(prog_type: int, expected_attach_type: int, insns: bytes, name: str) -> int:
    """Load a program; on a verifier rejection the error carries the verifier's log."""
    code = ctypes.create_string_buffer(insns, len(insns))
    license = ctypes.create_string_buffer(b"GPL")
    log = ctypes.create_string_buffer(1 << 16)
    attr = _attr(
        (0, "I", prog_type),
        (4, "I", len(insns) // 8),
        (8, "Q", ctypes.addressof(code)),
        (16, "Q", ctypes.addressof(license)),
        (24, "I", 1),
        (28, "I", len(log)),
        (32, "Q", ctypes.addressof(log)),
        (68, "I", expected_attach_type),
    )
    ctypes.memmove(ctypes.addressof(attr) + 48, name.encode()[:15], len(name.encode()[:15]))
    try:
        return bpf(BPF_PROG_LOAD, attr)
    except OSError as err:
        verifier_log = log.value.decode(errors="replace").strip()
        error = _explain(err, f"loading eBPF program {name!r}")
        if verifier_log:
            error = BpfError(f"{error}\nverifier log:\n{verifier_log}")
        raise error from None
