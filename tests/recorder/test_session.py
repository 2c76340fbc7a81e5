"""Recorder steps whose kernel answer is easy to get wrong: a listener's shutdown(SHUT_WR), and
bind/connect with an address of the other family."""

from __future__ import annotations

import errno

import pytest

from tracekit.recorder import record, record_scenario
from tracekit.recorder.scenario import parse_scenario
from tracekit.replay import replay
from tracekit.trace import validate_trace

pytestmark = [pytest.mark.kernel, pytest.mark.usefixtures("kernel_recording")]


def _scenario(name: str, steps: list[dict]):
    return parse_scenario({"name": name, "step": steps})


def test_shutdown_wr_leaves_a_listener_listening_with_its_queue(tmp_path):
    # inet_shutdown(): a TCP_LISTEN socket is disconnected only for RCV_SHUTDOWN (SHUT_RD, SHUT_RDWR)
    scenario = _scenario("shut-wr", [
        {"op": "sysctl", "name": "net.ipv4.tcp_migrate_req", "value": 0},
        {"op": "open", "socks": ["a", "b"], "proto": "tcp", "addr": "127.0.0.1", "port": 8300},
        {"op": "clients", "addr": "127.0.0.1", "port": 8300, "count": 12},
        {"op": "shutdown", "socks": ["a", "b"], "how": "wr", "label": "wr"},
        {"op": "clients", "addr": "127.0.0.1", "port": 8300, "count": 4, "label": "later"},
    ])
    recording = record_scenario(scenario)
    rows = recording.capture.rows
    assert recording.capture.outcomes.rets["wr"] == [0, 0]
    assert not [r for r in rows if r["event"] == "reset"]
    assert len([r for r in rows if r["event"] == "accept"]) == 16
    path = record(scenario, output=tmp_path / "wr.parquet")
    s = replay(path).summary
    assert (s["decisions"], s["mismatched"], s["unknown"]) == (16, 0, 0)


def test_an_address_of_the_other_family_gets_the_kernels_errno(tmp_path):
    scenario = _scenario("cross-family", [
        {"op": "open", "sock": "dual", "proto": "udp", "addr": "::", "port": 8310},
        {"op": "connect", "sock": "dual", "addr": "127.0.0.1", "port": 9100, "label": "dual"},
        {"op": "open", "sock": "v6only", "proto": "udp", "family": 6, "addr": "::", "port": 8311,
         "options": {"IPV6_V6ONLY": 1}},
        {"op": "connect", "sock": "v6only", "addr": "127.0.0.1", "port": 9100, "label": "v6only"},
        {"op": "socket", "sock": "t6", "proto": "tcp", "family": 6},
        {"op": "bind", "sock": "t6", "addr": "127.0.0.1", "port": 8312, "label": "t6"},
        {"op": "socket", "sock": "u4", "proto": "udp", "family": 4},
        {"op": "connect", "sock": "u4", "addr": "::1", "port": 9100, "label": "u4"},
        {"op": "datagrams", "addr": "127.0.0.1", "port": 8310, "src_port": 9100, "label": "to-dual"},
    ])
    recording = record_scenario(scenario)
    rets = recording.capture.outcomes.rets
    # udpv6_pre_connect(): a sockaddr_in on an AF_INET6 socket connects as its IPv4-mapped
    # address, or -EAFNOSUPPORT with IPV6_V6ONLY; inet6_bind() refuses a short sockaddr with
    # -EINVAL; __ip4_datagram_connect() refuses a non-AF_INET one with -EAFNOSUPPORT
    assert (rets["dual"], rets["v6only"], rets["t6"], rets["u4"]) == ([0], [-errno.EAFNOSUPPORT], [-errno.EINVAL], [-errno.EAFNOSUPPORT])
    assert recording.capture.outcomes.delivered[recording.capture.outcomes.flows["to-dual"][0][0]] == ["dual"]
    path = record(scenario, output=tmp_path / "x.parquet")
    validate_trace(path)
    s = replay(path).summary
    assert (s["decisions"], s["mismatched"], s["unknown"]) == (1, 0, 0)
