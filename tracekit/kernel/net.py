"""Per-network-namespace state the model reads: sysctls, MIB counters, the reuseport IDA.

The CPU that runs the current operation (`raw_smp_processor_id()`) is kept here too: a replay feeds
each event's `cpu` column in before calling into the model.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

from tracekit.kernel.profiles import NEWEST, Profile


@dataclass
class Ida:
    """`DEFINE_IDA(reuseport_ida)`: the lowest free id is handed out first."""

    used: set[int] = field(default_factory=set)

    def ida_alloc(self) -> int:
        i = 0
        while i in self.used:
            i += 1
        self.used.add(i)
        return i

    def ida_free(self, i: int) -> None:
        self.used.discard(i)


@dataclass
class Net:
    profile: Profile = NEWEST
    sysctl_tcp_migrate_req: int = 0
    cpu: int = 0
    mib: Counter[str] = field(default_factory=Counter)
    reuseport_ida: Ida = field(default_factory=Ida)
    # eBPF programs are opaque: a policy registered under the program's name decides for it.
    ebpf_policies: dict[str, Callable[..., object]] = field(default_factory=dict)


def raw_smp_processor_id(net: Net) -> int:
    return net.cpu
