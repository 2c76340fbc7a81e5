"""The eBPF policy path against the real kernel: story-ebpf-steering attaches a hand-assembled
SK_REUSEPORT program (tracekit.recorder.steering); replay without its policy leaves its decisions
unknown, with the shipped policy (tracekit.recorder.policies) predicts every one of them."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from tracekit.recorder import policies, record, record_scenario
from tracekit.recorder.scenario import ScenarioError, parse_scenario
from tracekit.cli import main
from tracekit.kernel.bpf import DROP, SkReuseportMd
from tracekit.replay.api import replay

SCENARIO = "story-ebpf-steering"
PROGRAM = "first-byte-steering"
POLICY_SPEC = f"{PROGRAM}=tracekit.recorder.policies:story_ebpf_steering"
SENT, DROPPED = 21, 3  # datagrams the scenario sends, and those its program drops (payload 0xfe...)
CONNECTIONS = 12  # TCP connections, steered by hash % 3
DECISIONS = SENT + CONNECTIONS  # every datagram: a recv, or (the trace is complete) a drop


@pytest.fixture(scope="module")
def _recorded() -> dict:
    return {}


@pytest.fixture
def trace(kernel_recording, _recorded, tmp_path_factory):
    """The scenario recorded once per module (after kernel_recording decided we can record)."""
    if "path" not in _recorded:
        _recorded["path"] = record(SCENARIO, output=tmp_path_factory.mktemp("ebpf") / "ebpf.parquet")
    return _recorded["path"]


@pytest.mark.kernel
@pytest.mark.usefixtures("kernel_recording")
def test_recording_meets_its_expectations_and_names_the_program():
    recording = record_scenario(SCENARIO)
    assert recording.failures == []
    rows = recording.capture.rows
    attach = [r for r in rows if r["event"] == "setsockopt" and r["name"] == "SO_ATTACH_REUSEPORT_EBPF"]
    assert [(r["sk"], r["prog"], r["value"], r["ret"]) for r in attach] == [(0, PROGRAM.encode(), 39, 0),
                                                                            (4, PROGRAM.encode(), 39, 0)]
    datagrams = [r for r in rows if r["event"] == "datagram"]
    assert len(datagrams) == SENT
    assert all("hash" in r for r in datagrams)  # the program replaced the observer: re-probed
    assert sum(r["event"] == "recv" for r in rows) == SENT - DROPPED
    syns = [r for r in rows if r["event"] == "syn"]
    assert len(syns) == CONNECTIONS and all("hash" in r for r in syns)
    assert sum(r["event"] == "accept" for r in rows) == CONNECTIONS
    assert int(recording.capture.metadata["tracekit.observer.reprobed"]) == SENT + CONNECTIONS


@pytest.mark.kernel
def test_replay_without_the_policy_is_unknown_never_wrong(trace):
    summary = replay(trace).summary
    assert summary["mismatched"] == 0 and summary["matched"] == 0
    assert summary["unknown_reasons"] == {"unregistered-prog": DECISIONS}
    assert [g["prog"] for g in summary["groups"]] == [f"ebpf:{PROGRAM}"] * 2


@pytest.mark.kernel
def test_replay_with_the_policy_predicts_every_decision(trace):
    summary = replay(trace, policies={PROGRAM: policies.story_ebpf_steering}).summary
    assert (summary["decisions"], summary["matched"], summary["mismatched"], summary["unknown"]) == (DECISIONS, DECISIONS, 0, 0)


@pytest.mark.kernel
def test_a_policy_that_never_drops_is_caught_on_exactly_the_dropped_datagrams(trace):
    def never_drops(md: SkReuseportMd):
        verdict = policies.story_ebpf_steering(md)
        return None if verdict is DROP else verdict

    summary = replay(trace, policies={PROGRAM: never_drops}).summary
    assert summary["mismatched"] == DROPPED
    assert all(m["event"] == "datagram" and m["observed"] == -1 and m["expected"] >= 0
               for m in summary["mismatches"])


@pytest.mark.kernel
def test_a_wrong_policy_is_caught(trace):
    reversed_udp = policies.first_byte_steering_policy((3, 2, 1, 0), (4, 5, 6))
    assert replay(trace, policies={PROGRAM: reversed_udp}).summary["mismatched"] > 0

    def tcp_by_kernel_hash(md: SkReuseportMd):
        return None if md.ip_protocol == 6 else policies.story_ebpf_steering(md)

    assert replay(trace, policies={PROGRAM: tcp_by_kernel_hash}).summary["mismatched"] > 0


@pytest.mark.kernel
def test_cli_policy_option(trace, tmp_path):
    runner = CliRunner()
    out = tmp_path / "summary.json"
    result = runner.invoke(main, ["replay", str(trace), "--policy", POLICY_SPEC, "--json", str(out)])
    assert result.exit_code == 0, result.output
    summary = json.loads(out.read_text())
    assert (summary["matched"], summary["mismatched"], summary["unknown"]) == (DECISIONS, 0, 0)
    wrong = runner.invoke(main, ["replay", str(trace), "--policy", f"{PROGRAM}=tracekit.recorder.policies:nothing"])
    assert wrong.exit_code == 2


def _md(payload: bytes | None, hash_: int = 0, socks: tuple[int, ...] = (10, 11, 12), protocol: int = 17) -> SkReuseportMd:
    return SkReuseportMd(hash=hash_, sk=socks[0], migrating_sk=None, socks=socks, bind_inany=False, ip_protocol=protocol,
                         payload=payload, cpu=0)


def test_policy_selects_passes_and_drops():
    policy = policies.first_byte_steering_policy((10, 11, 12))
    socks = (10, 11, 12)
    assert [policy(_md(bytes([b]), socks=socks)) for b in (0, 1, 2, 3, 7)] == [10, 11, 12, 10, 11]
    assert policy(_md(b"\xff", socks=socks)) is None
    assert policy(_md(b"\xfe\x00", socks=socks)) is DROP
    assert policy(_md(b"", hash_=5, socks=socks)) == 12  # no payload byte: by hash
    assert policy(_md(None, hash_=4, socks=socks, protocol=6)) == 11  # TCP: by hash
    assert policy(_md(b"\x01", socks=(10, 12))) is None  # its socket left the group: the slot is empty
    with pytest.raises(LookupError, match="none of its maps"):
        policy(_md(b"\x01", socks=(0, 1)))


def test_policy_uses_the_map_of_the_group_it_runs_for():
    policy = policies.first_byte_steering_policy((0, 1), (2, 3, 4))
    assert policy(_md(b"\x04", socks=(0, 1))) == 0
    assert policy(SkReuseportMd(hash=0, sk=3, migrating_sk=None, socks=(2, 3, 4), bind_inany=False, ip_protocol=17,
                                payload=b"\x04", cpu=0)) == 3


def test_ebpf_step_is_validated():
    base = {"name": "x", "step": [{"op": "open", "socks": ["a"], "proto": "udp", "port": 1}]}
    with pytest.raises(ScenarioError, match="not a steering program"):
        parse_scenario(base | {"step": base["step"] + [{"op": "ebpf", "socks": ["a"], "program": "nope"}]})
    with pytest.raises(ScenarioError, match="missing field"):
        parse_scenario(base | {"step": base["step"] + [{"op": "ebpf", "program": PROGRAM}]})
    with pytest.raises(ScenarioError, match="before a socket or open step"):
        parse_scenario(base | {"step": base["step"] + [{"op": "ebpf", "socks": ["b"], "program": PROGRAM}]})
