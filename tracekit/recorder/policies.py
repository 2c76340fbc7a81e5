"""Replay policies for the eBPF steering programs of tracekit.recorder.steering.

Replay cannot run an eBPF program; it calls the Python policy registered under the name the trace
gives the program (`tracekit replay --policy NAME=module:function`, or
`tracekit.replay.api.replay(path, policies={NAME: function})`). A policy sees the selection as a
`SkReuseportMd` and returns the `sk` id to select, None to pass without selecting (the kernel then
falls back to its hash), or `DROP`.

How a policy knows the program's map: the recorder's sockarray holds, at index i, the i-th socket
of the `ebpf` step's `socks` list, and the recorder numbers sockets (`sk`) in the order the scenario
creates them, starting at 0. So the policy is built with the `sk` ids of each such list
(`first_byte_steering_policy(map, ...)`, one map per group the program is attached to) and uses
the map holding `md.sk` (the group's socket the lookup found). `md.socks` (the group's live
sockets in array order) says which are still in the group: the kernel empties the slot of a
socket that leaves it, and selecting an empty slot fails, so the program passes without selecting.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence

from tracekit.recorder.observer import KERNEL_NAME as OBSERVER_KERNEL_NAME
from tracekit.recorder.steering import DROP_BYTE, PASS_BYTE
from tracekit.kernel.bpf import DROP, ErrPtr, Policy, SkReuseportMd


def first_byte_steering_policy(*maps: Sequence[int]) -> Policy:
    """The `first-byte-steering` program, each map the `sk` ids of one group's sockarray in index
    order: a UDP datagram's first payload byte b selects map[b % N], 0xff passes, 0xfe drops;
    anything else (a TCP SYN, an empty datagram) selects map[hash % N]."""
    by_member = {sk: tuple(ids) for ids in maps for sk in ids}

    def policy(md: SkReuseportMd) -> int | None | ErrPtr:
        ids = by_member.get(md.sk)
        if ids is None:
            raise LookupError(f"first-byte-steering policy: socket {md.sk} is in none of its maps {list(maps)}")
        if md.ip_protocol == socket.IPPROTO_UDP and md.payload:
            byte = md.payload[0]
            if byte == PASS_BYTE:
                return None
            if byte == DROP_BYTE:
                return DROP
            chosen = ids[byte % len(ids)]
        else:
            chosen = ids[md.hash % len(ids)]
        return chosen if chosen in md.socks else None

    return policy


def observer_passes(md: SkReuseportMd) -> None:
    """The recorder's eBPF observer (`tracekit.recorder.observer`, named `tk_observer` in the
    kernel, `OBSERVER_KERNEL_NAME`): it records the selection and passes without selecting. A
    probe trace of a host where the recorder runs names it: replay it with
    `--policy tk_observer=tracekit.recorder.policies:observer_passes`."""
    return None


story_ebpf_steering = first_byte_steering_policy((0, 1, 2, 3), (4, 5, 6))
"""The policy for the built-in scenario story-ebpf-steering: its `ebpf` steps map u0..u3 (sk 0..3,
the scenario's first four sockets) and t0..t2 (sk 4..6, the next three)."""

SCENARIO_POLICIES: dict[str, dict[str, Policy]] = {
    "story-ebpf-steering": {"first-byte-steering": story_ebpf_steering},
}
"""For each built-in scenario that attaches an eBPF program, the policies that replay its trace
(by program name): what a user passes as `replay(..., policies=...)` or `--policy`."""
