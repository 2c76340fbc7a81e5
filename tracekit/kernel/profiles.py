"""Kernel behaviour profiles: what differs between kernel releases in the code the model mirrors.

Each profile is named after the first mainline release that behaves that way and lists the
commits (subject and id) that make it differ from the previous profile. A trace's
`tracekit.kernel` metadata picks the newest profile whose release is not newer than the trace's
kernel; a trace that does not say gets the newest profile. Stable backports are not tracked: a
distribution kernel that carries a fix early needs `--profile`.

Changes with no effect on which socket is chosen are listed where they landed but add no profile,
e.g. 6.1 "udp: Update reuse->has_conns under reuseport_lock." (locking only).
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Profile:
    name: str
    release: tuple[int, int]
    summary: str
    # reuse->incoming_cpu counts members with SO_INCOMING_CPU set; while it is non-zero,
    # reuseport_select_sock_by_hash() prefers a socket whose sk_incoming_cpu is the selecting CPU
    # and setsockopt(SO_INCOMING_CPU) goes through reuseport_update_incoming_cpu().
    incoming_cpu: bool
    # udp4_lib_lookup2()/udp6_lib_lookup2(): when the group has connected sockets (has_conns),
    # the socket reuseport selected is re-scored with compute_score() before later sockets of
    # the slot compete with it; before, it kept the score of the group's first socket, and a
    # connected (TCP_ESTABLISHED) socket met first went through reuseport selection too.
    # Recorded, not switched on: socket_layer/lookup.py implements the 6.5 lookup for every
    # profile. The two differ only when the group's pick scores lower than its first member and a
    # socket outside the group, later in the slot, scores in between.
    udp_rescore: bool
    # connect() on a UDP socket puts it in the 4-tuple hash and rehashes it, which detaches it
    # from its reuseport group (udp_lib_rehash() -> reuseport_detach_sock()); before, a connected
    # socket stayed in the group as TCP_ESTABLISHED and hash selection skipped it.
    udp_hash4: bool = False
    changes: tuple[str, ...] = ()


PROFILES: tuple[Profile, ...] = (
    Profile(
        name="5.14",
        release=(5, 14),
        summary="listener migration (net.ipv4.tcp_migrate_req, BPF_SK_REUSEPORT_SELECT_OR_MIGRATE, "
        "the closed section of socks[]); hash selection skips TCP_ESTABLISHED sockets",
        incoming_cpu=False,
        udp_rescore=False,
        changes=(
            "f9ac779f881c net: Introduce net.ipv4.tcp_migrate_req.",
            "5c040eaf5d17 tcp: Add num_closed_socks to struct sock_reuseport.",
            "333bb73f620e tcp: Keep TCP_CLOSE sockets in the reuseport group.",
            "1cd62c21572c tcp: Add reuseport_migrate_sock() to select a new listener.",
            "54b92e841937 tcp: Migrate TCP_ESTABLISHED/TCP_SYN_RECV sockets in accept queues.",
            "d4f2c86b2b7e tcp: Migrate TCP_NEW_SYN_RECV requests at receiving the final ACK.",
            "bpf: Support socket migration by eBPF. (BPF_SK_REUSEPORT_SELECT_OR_MIGRATE)",
        ),
    ),
    Profile(
        name="6.2",
        release=(6, 2),
        summary="SO_INCOMING_CPU-aware hash selection (reuse->incoming_cpu, first_valid_sk)",
        incoming_cpu=True,
        udp_rescore=False,
        changes=("b261eda84ec1 soreuseport: Fix socket selection for SO_INCOMING_CPU.",),
    ),
    Profile(
        name="6.5",
        release=(6, 5),
        summary="UDP lookup re-scores the reuseport choice when the group has connected sockets",
        incoming_cpu=True,
        udp_rescore=True,
        changes=(
            "f0ea27e7bfe1 udp: re-score reuseport groups when connected sockets are present",
        ),
    ),
    Profile(
        name="6.13",
        release=(6, 13),
        summary="a connected UDP socket leaves its reuseport group (4-tuple hash, rehash on connect)",
        incoming_cpu=True,
        udp_rescore=True,
        udp_hash4=True,
        changes=(
            "78c91ae2c6de ipv4/udp: Add 4-tuple hash for connected socket.",
            "(observed on 6.18 by `tracekit record story-udp-connected`: connect() of a socket "
            "bound to a specific address detaches it from the group, swap-with-last)",
        ),
    ),
)

NEWEST = PROFILES[-1]
BY_NAME = {p.name: p for p in PROFILES}

_RELEASE = re.compile(r"^(\d+)\.(\d+)")


def is_release(release: str) -> bool:
    """Whether `release` reads like `uname -r` (`6.8.0-45-generic`): what `tracekit.kernel` holds."""
    return bool(_RELEASE.match(release))


def profile_for_kernel(release: str | None) -> Profile:
    """The profile for a `uname -r` string; the newest when the release is unknown or absent."""
    if not release:
        return NEWEST
    m = _RELEASE.match(release)
    if not m:
        return NEWEST
    version = (int(m.group(1)), int(m.group(2)))
    chosen = PROFILES[0]
    for profile in PROFILES:
        if profile.release <= version:
            chosen = profile
    return chosen


def profile_by_name(name: str) -> Profile:
    try:
        return BY_NAME[name]
    except KeyError:
        known = ", ".join(BY_NAME)
        raise ValueError(f"unknown kernel profile {name!r}; known profiles: {known}") from None
