"""Kernel behaviour profiles and how a trace's kernel release picks one."""

from __future__ import annotations

import pytest

from tracekit.kernel.net import Net
from tracekit.kernel.profiles import NEWEST, PROFILES, profile_by_name, profile_for_kernel, why_profile


@pytest.mark.parametrize("release,name", [
    ("6.18.44-generic", "6.13"), ("6.13.0", "6.13"), ("6.12.9", "6.10"), ("6.9.1", "6.5"), ("6.5.0-rc1", "6.5"),
    ("6.4.16", "6.2"), ("6.2.0", "6.2"), ("6.1.112-lts", "6.10"), ("6.1.60", "6.5"), ("6.1.52", "5.14"),
    ("5.15.0-91-generic", "5.14"),
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
    assert profile_by_name("6.10").udp_rescore_keeps_higher and not profile_by_name("6.5").udp_rescore_keeps_higher
    with pytest.raises(ValueError, match="known profiles: 5.14, 6.2, 6.5, 6.10, 6.13"):
        profile_by_name("4.19")


@pytest.mark.parametrize("release,version,name", [
    # Debian names the upstream stable release only in `uname -v`; 6.1.192 carries 6.10's behaviour.
    ("6.1.0-57-amd64", "#1 SMP PREEMPT_DYNAMIC Debian 6.1.192-3 (2026-11-20)", "6.10"),
    # Without `uname -v` the ABI form hides the sublevel: taken to carry the branch's backports.
    ("6.1.0-57-amd64", None, "6.10"), ("6.1.0-1-amd64", None, "6.10"),
    ("5.15.0-91-generic", None, "5.14"), ("6.5.0-rc1", None, "6.5"), ("6.1.0", None, "5.14"),
    ("6.12.111+deb12-amd64", "#1 SMP PREEMPT_DYNAMIC Debian 6.12.111-1~deb12u1 (2026-09-30)", "6.10"),
    ("6.18.44-fc-v1045", "#1 SMP PREEMPT_DYNAMIC @0", "6.13"),
])
def test_stable_backports_follow_the_version_string(release, version, name):
    assert profile_for_kernel(release, version).name == name


def test_why_names_the_backport_or_the_missing_version():
    assert why_profile("6.1.0-57-amd64", "Debian 6.1.192-3") == (
        "tracekit.kernel=6.1.0-57-amd64, stable 6.1.192 carries 6.10's behaviour (backport from 6.1.94)")
    assert why_profile("6.1.0-57-amd64") == (
        "tracekit.kernel=6.1.0-57-amd64 (no tracekit.kernel.version: the sublevel is hidden, taken to "
        "carry the 6.1 stable backports up to 6.1.94; --profile fit checks), stable 6.1.94 carries "
        "6.10's behaviour (backport from 6.1.94)")
    assert "no backport (none known for 5.15)" in why_profile("5.15.0-91-generic")
    assert why_profile(None) == "default (newest)"


def test_every_profile_says_what_it_switches():
    assert [len(p.switches()) for p in PROFILES] == sorted(len(p.switches()) for p in PROFILES)
    assert "4-tuple hash" in NEWEST.switches()[-1]
