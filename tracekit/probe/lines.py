"""Parse bpftrace's output: `TK` records (see `tracekit.probe.script`) and what bpftrace says itself.

Pure: text in, `Record`s out. A record's continuation lines (`s`: the payload of a selection,
`p`: the instructions of a classic program) carry the timestamp and CPU of their record and
follow it on the same CPU; `Assembler` attaches them.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

from tracekit.probe.script import FIELDS, PAYLOAD_WORDS, PROG_WORDS

__all__ = ["Record", "Lost", "Attached", "Assembler", "parse_line", "address", "be16"]

_LOST = re.compile(r"^Lost (\d+) events")
_ATTACHING = re.compile(r"^Attaching (\d+) probes?")
AF_INET, AF_INET6 = 2, 10


@dataclass
class Record:
    """One probe firing: its code (`FIELDS`), time, CPU and fields by name."""

    code: str
    ts: int
    cpu: int
    f: dict[str, int]
    name: str = ""
    payload: bytes | None = None
    insns: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class Lost:
    """bpftrace could not keep up: `count` events were dropped."""

    count: int


@dataclass(frozen=True)
class Attached:
    """bpftrace is about to attach `probes` probes (`ready` once the BEGIN record came)."""

    probes: int


class ProbeOutputError(ValueError):
    """A `TK` line that does not read as its record."""


def parse_line(line: str) -> Record | Lost | Attached | None:
    """The record, loss report or attach notice on `line`; None for anything else."""
    if not line.startswith("TK "):
        m = _LOST.match(line)
        if m:
            return Lost(int(m.group(1)))
        m = _ATTACHING.match(line)
        if m:
            return Attached(int(m.group(1)))
        return None
    words = line.rstrip("\n").split(" ")
    code = words[1]
    names = FIELDS.get(code, ()) if code != "B" else ()
    if code != "B" and not names:
        raise ProbeOutputError(f"unknown record {code!r}: {line!r}")
    try:
        ts, cpu = int(words[2]), int(words[3])
        values = words[4:]
        if code == "P":  # the program's name is the last word, maybe empty
            name = " ".join(values[len(names) - 1:])
            numbers = dict(zip(names[:-1], map(int, values[: len(names) - 1])))
            if len(numbers) != len(names) - 1:
                raise ProbeOutputError(f"short record: {line!r}")
            return Record(code, ts, cpu, numbers, name=name)
        if len(values) != len(names):
            raise ProbeOutputError(f"record {code} has {len(values)} fields, expected {len(names)}: {line!r}")
        return Record(code, ts, cpu, dict(zip(names, map(int, values))))
    except (IndexError, ValueError) as error:
        if isinstance(error, ProbeOutputError):
            raise
        raise ProbeOutputError(f"unreadable record: {line!r}") from None


class Assembler:
    """Attaches continuation lines to their record; yields each record once it is complete."""

    def __init__(self) -> None:
        self._open: dict[int, tuple[Record, int]] = {}  # by CPU: a record and lines it awaits

    def feed(self, item: Record) -> Iterator[Record]:
        if item.code in ("s", "p"):
            parent, awaited = self._open.get(item.cpu, (None, 0))
            if parent is None or parent.ts != item.ts:
                return  # its record was lost
            if item.code == "s":
                words = b"".join(struct.pack("<Q", item.f[f"w{i}"]) for i in range(PAYLOAD_WORDS))
                parent.payload = words[: min(max(item.f["len"], 0), len(words))]
                parent.f["payload_len"] = item.f["len"]
            else:
                parent.insns.append(item.f["insn"])
            if awaited <= 1:
                del self._open[item.cpu]
                yield parent
            else:
                self._open[item.cpu] = (parent, awaited - 1)
            return
        previous = self._open.pop(item.cpu, None)
        if previous is not None:
            yield previous[0]  # its continuations were lost
        awaited = _continuations(item)
        if awaited:
            self._open[item.cpu] = (item, awaited)
        else:
            yield item

    def flush(self) -> Iterator[Record]:
        """The records still waiting for continuations (at the end of the output)."""
        for cpu in sorted(self._open):
            yield self._open[cpu][0]
        self._open.clear()


def _continuations(record: Record) -> int:
    if record.code == "S":
        return 1 if record.f["prog"] and record.f["ffam"] else 0
    if record.code == "P":
        return min(record.f["len"], PROG_WORDS)
    return 0


@functools.lru_cache(maxsize=4096)
def address(family: int, words: tuple[int, ...]) -> str:
    """The text form of an address read as little-endian u32 words (network byte order inside)."""
    if family in (4, AF_INET):
        return socket.inet_ntop(socket.AF_INET, struct.pack("<I", words[0] & 0xFFFFFFFF))
    raw = struct.pack("<4I", *(w & 0xFFFFFFFF for w in words[:4]))
    return str(ipaddress.IPv6Address(raw))  # the canonical text (as the recorder writes it)


def be16(value: int) -> int:
    """A big-endian u16 read as a little-endian number, in host order."""
    value &= 0xFFFF
    return ((value & 0xFF) << 8) | (value >> 8)
