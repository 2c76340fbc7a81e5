"""Kernel behaviour profiles and how a trace's kernel release picks one."""

from __future__ import annotations

import pytest

from tracekit.kernel.net import Net
from tracekit.kernel.profiles import NEWEST, PROFILES, profile_by_name, profile_for_kernel


@pytest.mark.parametrize("release,name", [
    ("6.18.44-generic", "6.13"), ("6.13.0", "6.13"), ("6.12.9", "6.5"), ("6.5.0-rc1", "6.5"), ("6.4.16", "6.2"),
    ("6.2.0", "6.2"), ("6.1.112-lts", "5.14"), ("5.15.0-91-generic", "5.14"),
    ("5.14.0", "5.14"), ("5.10.0", "5.14"), (None, NEWEST.name), ("", NEWEST.name),
    ("not-a-release", NEWEST.name),
])
def test_profile_for_kernel(release, name):
    assert profile_for_kernel(release).name == name


def test_newest_is_default_and_has_every_behaviour():
    assert Net().profile is NEWEST is PROFILES[-1]
    assert NEWEST.incoming_cpu and NEWEST.udp_rescore and NEWEST.udp_hash4


def test_profiles_are_ordered_and_cite_commits():
    assert [p.release for p in PROFILES] == sorted(p.release for p in PROFILES)
    assert all(p.changes for p in PROFILES)


def test_profile_by_name():
    assert profile_by_name("6.2").incoming_cpu and not profile_by_name("6.2").udp_rescore
    with pytest.raises(ValueError, match="known profiles: 5.14, 6.2, 6.5, 6.13"):
        profile_by_name("4.19")
