"""Re-probed hashes: a flow sent again after the scenario gets the hash the kernel gave it during
the scenario, so groups running their own program record a hash on every syn and datagram, and
their traces replay with every decision predicted."""

from __future__ import annotations

import socket

import pytest

from tracekit.recorder import list_scenarios, netns, record
from tracekit.recorder.flows import Flow
from tracekit.recorder.observer import Observer
from tracekit.recorder.reprobe import REPROBE_NAME, Probe, ReprobeError, reprobe
from tracekit.recorder.runner import run_in_namespace
from tracekit.replay import replay
from tracekit.trace import read_metadata, read_trace

pytestmark = [pytest.mark.kernel, pytest.mark.usefixtures("kernel_recording")]

# (proto, address the group binds to, destination of its flows); "::" with a v4 destination is a
# dual-stack group, which the kernel looks up in the IPv4 wildcard slot
GROUPS = [
    ("tcp", "127.0.0.1", "127.0.0.1"),
    ("tcp", "0.0.0.0", "127.0.0.1"),
    ("tcp", "::1", "::1"),
    ("tcp", "::", "127.0.0.1"),
    ("udp", "127.0.0.1", "127.0.0.1"),
    ("udp", "0.0.0.0", "127.0.0.1"),
    ("udp", "::", "::1"),
    ("udp", "::", "127.0.0.1"),
]
FLOWS_PER_GROUP = 5
PROGRAM_SCENARIOS = sorted(
    name for name in list_scenarios()
    if name == "story-cbpf-steering" or name == "selftest-select_reuseport-detach"
    or name.startswith(("selftest-reuseport_bpf-", "selftest-reuseport_bpf_cpu-"))
)


def _wildcard(addr: str) -> str:
    return "0.0.0.0" if ":" not in addr else "::"


def _observe_then_reprobe() -> tuple[list[tuple[Probe, int]], dict, dict]:
    """Send flows to observed groups, close everything as the recorder does, then re-probe them:
    once bound as the groups were, once bound to the flows' destination."""
    netns.enter_private_netns()
    observer = Observer()
    sent = []
    for index, (proto, bound, destination) in enumerate(GROUPS):
        port = 8100 + index
        family = socket.AF_INET6 if ":" in bound else socket.AF_INET
        kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
        server = socket.socket(family, kind)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        server.bind((bound, port))
        if proto == "tcp":
            server.listen(16)
        observer.attach(server)
        for n in range(FLOWS_PER_GROUP):
            source = "::1" if ":" in destination else "127.0.0.1"
            client = socket.socket(socket.AF_INET6 if ":" in source else socket.AF_INET, kind)
            client.bind((source, 21000 + 10 * index + n))
            if proto == "tcp":
                client.connect((destination, port))
                server.accept()[0].close()  # the server side closes first: TIME_WAIT is on its side
            else:
                client.sendto(b"x", (destination, port))
            client.close()
            probe_bound = destination if bound == destination else _wildcard(destination)
            sent.append(Probe(proto, Flow(destination, port, source, 21000 + 10 * index + n), probe_bound))
        server.close()
    observed = {(r.ip_protocol, r.daddr, r.dport, r.saddr, r.sport): r.hash for r in observer.drain()}
    with_hash = [(p, observed[(socket.IPPROTO_TCP if p.proto == "tcp" else socket.IPPROTO_UDP, p.flow.laddr, p.flow.lport, p.flow.raddr, p.flow.rport)]) for p in sent]
    as_bound = reprobe(observer, [p for p, _ in with_hash])
    as_destination = reprobe(observer, [Probe(p.proto, p.flow, p.flow.laddr) for p, _ in with_hash if p.bound != p.flow.laddr])
    return with_hash, as_bound, as_destination


def test_a_flow_sent_again_gets_the_hash_it_got_before():
    with_hash, as_bound, as_destination = run_in_namespace(_observe_then_reprobe)
    assert len(with_hash) == len(GROUPS) * FLOWS_PER_GROUP
    assert {(p.proto, p.bound, p.flow): h for p, h in with_hash} == as_bound
    # the bound address is part of the hash: a wildcard group's flows sent to a specific group differ
    wildcard = [(p, h) for p, h in with_hash if p.bound != p.flow.laddr]
    assert len(wildcard) == 5 * FLOWS_PER_GROUP
    assert all(as_destination[(p.proto, p.flow.laddr, p.flow)] not in (None, h) for p, h in wildcard)


def _witness_with_another_hash(flow: Flow) -> str:
    netns.enter_private_netns()
    observer = Observer()
    found = reprobe(observer, [Probe("udp", flow, "127.0.0.1")])[("udp", "127.0.0.1", flow)]
    assert found is not None
    try:
        reprobe(observer, [Probe("udp", flow, "127.0.0.1", known=(found + 1) % 2**32)])
    except ReprobeError as err:
        return str(err)
    return "no error"


def test_a_witness_with_another_hash_fails_the_recording():
    message = run_in_namespace(_witness_with_another_hash, Flow("127.0.0.1", 8200, "127.0.0.1", 21500))
    assert "after the scenario but" in message and "cannot be trusted" in message


def _reprobe_while_port_taken(flow: Flow) -> dict:
    netns.enter_private_netns()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as holder:
        holder.bind((flow.raddr, flow.rport))
        return reprobe(Observer(), [Probe("udp", flow, flow.laddr)])


def test_a_flow_that_cannot_be_sent_again_stays_without_hash():
    flow = Flow("127.0.0.1", 8201, "127.0.0.1", 21501)
    assert run_in_namespace(_reprobe_while_port_taken, flow) == {("udp", flow.laddr, flow): None}


@pytest.mark.parametrize("name", PROGRAM_SCENARIOS)
def test_program_groups_record_a_hash_on_every_arrival_and_replay_fully(tmp_path, name):
    path = record(name, output=tmp_path / f"{name}.parquet")
    rows = read_trace(path)
    arrivals = rows[rows["event"].isin(["syn", "datagram"])]
    assert arrivals["hash"].notna().all()
    metadata = read_metadata(path)
    result = replay(path, results=True)
    assert (result.summary["mismatched"], result.summary["unknown"]) == (0, 0), result.summary["unknown_reasons"]
    if len(arrivals):
        assert metadata["tracekit.observer"] == f"sk_reuseport-hash/1+{REPROBE_NAME}"
        assert (metadata["tracekit.observer.reprobed"], metadata["tracekit.observer.unresolved"]) == (str(len(arrivals)), "0")
        assert result.summary["decisions"] > 0
    if name in ("selftest-select_reuseport-detach", "story-cbpf-steering"):
        # decisions that fall back to the hash: a wrong re-probed hash would be a mismatch here
        assert (result.decisions["reason"] == "hash").sum() >= 3


def test_program_scenarios_are_all_there():
    assert "story-cbpf-steering" in PROGRAM_SCENARIOS and "selftest-select_reuseport-detach" in PROGRAM_SCENARIOS
    assert sum(name.startswith("selftest-reuseport_bpf_cpu-") for name in PROGRAM_SCENARIOS) == 4
