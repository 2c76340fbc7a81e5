"""`Route.pick` and `Route.classic_pick`, the picks `SocketWalk._queue` queues arrivals with,
against the faithful lookup: `Host.syn` / `Host.datagram` return the pick the lookup made and
labelled, and a route on the same group must give that pick, field for field in the same order,
for every hash, CPU and payload (None from `classic_pick`: the faithful pick is unknown)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tracekit.kernel import cbpf
from tracekit.kernel.net import Net
from tracekit.kernel.profiles import BY_NAME
from tracekit.kernel.socket_layer.host import Host
from tracekit.replay.state import HostState
from tracekit.replay.stretch import Route

PORT = 8080


def group(profile: str, proto: str, laddr: str, cpus: list[int], prog: bytes | None) -> Host:
    """A host with one group of `len(cpus)` sockets on `laddr:PORT` (listening, for TCP), each
    with SO_INCOMING_CPU `cpus[i]` where it is not -1, and the classic program `prog`."""
    host = Host(Net(profile=BY_NAME[profile]))
    for sk, cpu in enumerate(cpus):
        host.socket(sk, proto, 4)
        host.setsockopt(sk, "SO_REUSEPORT", 1, None, 0)
        if cpu >= 0:
            host.setsockopt(sk, "SO_INCOMING_CPU", cpu, None, 0)
        host.bind(sk, laddr, PORT, 0)
        if proto == "tcp":
            host.listen(sk, 0)
    if prog is not None:
        host.setsockopt(0, "SO_ATTACH_REUSEPORT_CBPF", None, prog, 0)
    return host


def classic(data: st.DataObject) -> bytes | None:
    """No program, or one that returns a payload byte (`ldb [k]; ret a`) or the CPU, which may
    name a socket or not (then the hash decides)."""
    kind = data.draw(st.sampled_from(["none", "byte", "cpu"]))
    if kind == "none":
        return None
    if kind == "byte":
        load = (cbpf.BPF_LD | cbpf.BPF_B | cbpf.BPF_ABS, 0, 0, data.draw(st.integers(0, 3)))
    else:
        load = (cbpf.BPF_LD | cbpf.BPF_W | cbpf.BPF_ABS, 0, 0,
                cbpf.SKF_AD_OFF + cbpf.SKF_AD_CPU + 2**32)
    return cbpf.encode_sock_filter([load, (cbpf.BPF_RET | cbpf.BPF_A, 0, 0, 0)])


@settings(max_examples=300, deadline=None)
@given(profile=st.sampled_from(sorted(BY_NAME)), proto=st.sampled_from(["tcp", "udp"]),
       laddr=st.sampled_from(["127.0.0.1", "0.0.0.0"]),
       cpus=st.lists(st.integers(-1, 2), min_size=1, max_size=6), data=st.data())
def test_route_picks_are_the_lookups_picks(profile, proto, laddr, cpus, data):
    host = group(profile, proto, laddr, cpus, classic(data))
    event = "syn" if proto == "tcp" else "datagram"
    head = host.hash_route(event, "127.0.0.1", PORT, classic=True)
    assert head is not None
    route = Route(HostState("h", host), head)
    for rport in range(40000, 40000 + data.draw(st.integers(1, 12))):
        hash = data.draw(st.integers(0, 2**32 - 1))
        cpu = data.draw(st.integers(0, 3))
        payload = data.draw(st.one_of(st.none(), st.binary(max_size=5)))
        seq = host.seq = rport  # (as `_queue` sets it)
        flow = ("127.0.0.1", PORT, "127.0.0.1", rport)
        if route.prog is None:
            fast = route.pick(hash, cpu, seq)
        else:
            fast = route.classic_pick(hash, cpu, seq, flow, payload)
        if proto == "tcp":
            faithful = host.syn(*flow, hash, cpu, payload)
        else:
            faithful = host.datagram(*flow, hash, cpu, payload)
        if fast is None:
            assert faithful.unknown is not None, faithful
        else:
            assert list(fast.__dict__.items()) == list(faithful.__dict__.items())
            assert fast == faithful
