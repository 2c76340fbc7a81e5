"""Kernel behaviour profiles: what differs between kernel releases in the code the model mirrors.

Each profile is named after the first mainline release that behaves that way and lists the
commits (subject and id) that make it differ from the previous profile. A trace's
`tracekit.kernel` (`uname -r`) and `tracekit.kernel.version` (`uname -v`, where a distribution
names its upstream stable release, e.g. "Debian 6.1.192-3") pick the newest profile whose
mainline release is not newer than the kernel's, or whose behaviour a stable branch carries from
a known sublevel on (`backports`, with the evidence in `changes`); a trace that does not say gets
the newest profile. A distribution release that hides its sublevel behind an ABI number
(Debian's `6.1.0-57-amd64`, Ubuntu's `5.15.0-91-generic`) with no `tracekit.kernel.version` is taken
to carry every stable backport listed for its branch: distribution kernels follow their stable
branch, and Debian's 6.1.0-57 is 6.1.192. `--profile fit` (`tracekit.replay.fit`) checks that
against the trace's behaviour.

`VERIFIED` lists the real kernels each profile was checked against (every built-in scenario and
random walks replayed with 0 mismatches and 0 unknown).

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
    # the slot compete with it; before, it kept the score of the group's first socket.
    # (socket_layer/lookup.py udp_lookup2; the scores differ only by the SO_INCOMING_CPU bonus.)
    udp_rescore: bool
    # 6.10 "udp: Avoid call to compute_score on multiple sites" re-scores by jumping back to the
    # loop's `if (score > badness)`: the pick's score counts only when it is higher than the
    # first member's; 6.5-6.9 assign it unconditionally.
    udp_rescore_keeps_higher: bool = False
    # connect() on a UDP socket puts it in the 4-tuple hash and rehashes it, which detaches it
    # from its reuseport group (udp_lib_rehash() -> reuseport_detach_sock()); before, a connected
    # socket stayed in the group as TCP_ESTABLISHED and hash selection skipped it.
    udp_hash4: bool = False
    changes: tuple[str, ...] = ()
    # Stable releases that carry this profile's behaviour early: (6, 1, 94) = 6.1.94 and later 6.1.y.
    backports: tuple[tuple[int, int, int], ...] = ()

    def switches(self) -> list[str]:
        """What this profile switches on, in words (for reports)."""
        words = ["listener migration and the closed section (5.14)"]
        if self.incoming_cpu:
            words.append("SO_INCOMING_CPU-aware hash selection (reuse->incoming_cpu)")
        if self.udp_rescore:
            words.append("UDP re-scores a group's pick when it has connected sockets"
                         + (" (the higher score counts)" if self.udp_rescore_keeps_higher else ""))
        if self.udp_hash4:
            words.append("a connected UDP socket leaves its group (4-tuple hash)")
        return words


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
        changes=(
            "b261eda84ec1 soreuseport: Fix socket selection for SO_INCOMING_CPU.",
            "(Debian 6.1.0-57 = 6.1.192 behaves so, observed in a QEMU guest; its changelog lists no "
            "backport of it, and the fix was posted to net during 6.1-rc: 6.1 may carry it from the start)",
        ),
    ),
    Profile(
        name="6.5",
        release=(6, 5),
        summary="UDP lookup re-scores the reuseport choice when the group has connected sockets",
        incoming_cpu=True,
        udp_rescore=True,
        changes=(
            "f0ea27e7bfe1 udp: re-score reuseport groups when connected sockets are present",
            "(stable 6.1.53 carries it: Debian's linux 6.1 changelog, ChangeLog-6.1.53)",
        ),
        backports=((6, 1, 53),),
    ),
    Profile(
        name="6.10",
        release=(6, 10),
        summary="the UDP re-score keeps the higher of the group's first member's and the pick's score",
        incoming_cpu=True,
        udp_rescore=True,
        udp_rescore_keeps_higher=True,
        changes=(
            "udp: Avoid call to compute_score on multiple sites (the rescore jumps back to the "
            "`score > badness` test)",
            "(stable 6.1.94 carries it: Debian's linux 6.1 changelog, ChangeLog-6.1.93/94)",
            "(verified: Debian 6.1.0-57 = 6.1.192 and Debian 6.12.111 in QEMU guests, tracekit.vmlab)",
        ),
        backports=((6, 1, 94),),
    ),
    Profile(
        name="6.13",
        release=(6, 13),
        summary="a connected UDP socket leaves its reuseport group (4-tuple hash, rehash on connect)",
        incoming_cpu=True,
        udp_rescore=True,
        udp_rescore_keeps_higher=True,
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

_RELEASE = re.compile(r"^(\d+)\.(\d+)(?:\.(\d+))?")
_ABI_RELEASE = re.compile(r"^\d+\.\d+\.0-\d+")  # Debian/Ubuntu: X.Y.0-ABI-flavour

# Real kernels each profile was verified against: every built-in scenario and random walks
# recorded on them (Debian's in QEMU guests, `tracekit record --vm`) replay with 0 mismatches and
# 0 unknown under it (tests/differential/test_vm_differential.py re-checks the deciding ones).
VERIFIED: dict[str, tuple[str, ...]] = {
    "6.10": ("6.1.0-57-amd64 (Debian 6.1.192)", "6.12.111+deb12-amd64 (Debian 6.12.111)"),
    "6.13": ("6.18.44 (this project's CI host)",),
}


def is_release(release: str) -> bool:
    """Whether `release` reads like `uname -r` (`6.8.0-45-generic`): what `tracekit.kernel` holds."""
    return bool(_RELEASE.match(release))


def kernel_version(release: str | None, version: str | None = None) -> tuple[int, int, int] | None:
    """(major, minor, sublevel) of a kernel from `uname -r` and, where it names the upstream stable
    release (Debian: "... Debian 6.1.192-3 ..."), `uname -v`; None when the release is unreadable."""
    m = _RELEASE.match(release or "")
    if not m:
        return None
    major, minor, sublevel = int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)
    if version:
        stable = re.search(rf"(?<![\d.]){major}\.{minor}\.(\d+)", version)
        if stable:
            sublevel = max(sublevel, int(stable.group(1)))
    return major, minor, sublevel


def hides_sublevel(release: str | None, version: str | None = None) -> bool:
    """Whether a release hides its stable sublevel behind a distribution's ABI number
    (`6.1.0-57-amd64`) and no `uname -v` names it."""
    return version is None and bool(_ABI_RELEASE.match(release or ""))


def _newest_backport(version: tuple[int, int, int]) -> tuple[int, int, int]:
    """`version` raised to the newest sublevel of its branch that a profile's backport names."""
    known = [b[2] for p in PROFILES for b in p.backports if b[:2] == version[:2]]
    return (*version[:2], max([version[2], *known]))


def _carries(profile: Profile, version: tuple[int, int, int]) -> bool:
    if profile.release <= version[:2]:
        return True
    return any(b[:2] == version[:2] and b[2] <= version[2] for b in profile.backports)


def profile_for_kernel(release: str | None, version: str | None = None) -> Profile:
    """The profile for a `uname -r` (and `uname -v`); the newest when the release is unknown or absent."""
    found = kernel_version(release, version)
    if found is None:
        return NEWEST
    if hides_sublevel(release, version):
        found = _newest_backport(found)
    chosen = PROFILES[0]
    for profile in PROFILES:
        if _carries(profile, found):
            chosen = profile
    return chosen


def why_profile(release: str | None, version: str | None = None) -> str:
    """Why `profile_for_kernel` chose what it chose, in words (a report's "chosen by")."""
    found = kernel_version(release, version)
    if found is None:
        return "default (newest)" if not release else f"tracekit.kernel={release} (unreadable: newest)"
    chosen = profile_for_kernel(release, version)
    text = f"tracekit.kernel={release}"
    if hides_sublevel(release, version):  # Debian's 6.1.0-57: sublevel hidden
        assumed = _newest_backport(found)
        text += (" (no tracekit.kernel.version: the sublevel is hidden, taken to carry "
                 + (f"the {found[0]}.{found[1]} stable backports up to {'.'.join(map(str, assumed))}"
                    if assumed != found else f"no backport (none known for {found[0]}.{found[1]})")
                 + "; --profile fit checks)")
        found = assumed
    if chosen.release > found[:2]:
        sublevel = ".".join(map(str, found))
        text += f", stable {sublevel} carries {chosen.name}'s behaviour (backport from " + ", ".join(
            ".".join(map(str, b)) for b in chosen.backports if b[:2] == found[:2]) + ")"
    return text


def profile_by_name(name: str) -> Profile:
    try:
        return BY_NAME[name]
    except KeyError:
        known = ", ".join(BY_NAME)
        raise ValueError(f"unknown kernel profile {name!r}; known profiles: {known}") from None
