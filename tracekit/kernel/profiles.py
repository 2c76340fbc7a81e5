"""Kernel behaviour profiles: what differs between kernel releases in the code the model mirrors.

Each profile is named after the first release that behaves that way. A trace's `tracekit.kernel`
metadata picks the newest profile whose release is not newer than the trace's kernel; a trace that
does not say gets the newest profile.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Profile:
    name: str
    release: tuple[int, int]
    summary: str
    # reuseport_select_sock_by_hash() prefers a socket whose sk_incoming_cpu is the CPU running the
    # selection (b261eda84ec1, "soreuseport: Fix socket selection for SO_INCOMING_CPU.", 6.1).
    incoming_cpu: bool


PROFILES: tuple[Profile, ...] = (
    Profile(
        name="5.14",
        release=(5, 14),
        summary="listener migration (tcp_migrate_req, BPF_SK_REUSEPORT_SELECT_OR_MIGRATE); "
        "hash selection skips TCP_ESTABLISHED sockets",
        incoming_cpu=False,
    ),
    Profile(
        name="6.1",
        release=(6, 1),
        summary="SO_INCOMING_CPU-aware hash selection (reuse->incoming_cpu)",
        incoming_cpu=True,
    ),
)

NEWEST = PROFILES[-1]
BY_NAME = {p.name: p for p in PROFILES}

_RELEASE = re.compile(r"^(\d+)\.(\d+)")


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
