"""`migrate_queue_traced` (a stopping listener's whole queue at once) against `migrate_traced`
child by child: the same sockets, the same picks, the same MIB counts, whatever the group."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tracekit.kernel import cbpf
from tracekit.kernel.bpf import BpfProg
from tracekit.kernel.net import Net
from tracekit.kernel.profiles import BY_NAME
from tracekit.kernel.sock import IPPROTO_TCP, TCP_ESTABLISHED, TCP_LISTEN, Sock
from tracekit.kernel.sock_reuseport import (
    reuseport_add_sock,
    reuseport_alloc,
    reuseport_attach_prog,
    reuseport_stop_listen_sock,
    reuseport_update_incoming_cpu,
)
from tracekit.kernel.socket_layer.selection import (
    Pick,
    migrate_queue_traced,
    migrate_traced,
    new_pick,
    replace_pick,
)

PROGS = ("none", "cbpf", "ebpf", "ebpf-migrate", "ebpf-migrate-unregistered")
RET_1 = ((cbpf.BPF_RET | cbpf.BPF_K, 0, 0, 1),)  # a classic program: always index 1


def group(profile: str, n: int, cpus: list[int], established: list[bool], sysctl: bool,
          prog: str, closing_first: bool, cpu: int) -> tuple[Net, Sock]:
    """A group of `n` listeners, the first one stopped (into the closed section when something
    can migrate it); returns the namespace and the stopped listener."""
    net = Net(profile=BY_NAME[profile],
              ebpf_policies={"pick-last": lambda md: md.socks[-1] if md.socks else None})
    net.sysctl_tcp_migrate_req = int(sysctl)
    net.cpu = cpu
    socks = [Sock(sk_id=i, sk_net=net, sk_protocol=IPPROTO_TCP, sk_state=TCP_LISTEN,
                  sk_reuseport=True, hashed=True) for i in range(n)]
    assert reuseport_alloc(socks[0], False) == 0
    for sk in socks[1:]:
        assert reuseport_add_sock(sk, socks[0], False) == 0
    for sk, c in zip(socks, cpus):
        reuseport_update_incoming_cpu(sk, c)
    if prog == "cbpf":
        reuseport_attach_prog(socks[0], BpfProg.cbpf(RET_1))
    elif prog.startswith("ebpf"):
        name = "pick-last" if prog != "ebpf-migrate-unregistered" else "nobody"
        reuseport_attach_prog(socks[0], BpfProg.ebpf(name, migrate="migrate" in prog))
    closing = socks[0] if closing_first else socks[-1]
    reuseport_stop_listen_sock(closing)
    for sk, est in zip(socks, established):
        if est and sk is not closing:
            sk.sk_state = TCP_ESTABLISHED  # (selection skips it)
    return net, closing


def child_of(net: Net):
    return lambda: Sock(-1, net, sk_protocol=IPPROTO_TCP, sk_state=TCP_ESTABLISHED)


@settings(max_examples=300, deadline=None)
@given(profile=st.sampled_from(sorted(BY_NAME)), n=st.integers(1, 6),
       cpus=st.lists(st.integers(-1, 3), min_size=6, max_size=6),
       established=st.lists(st.booleans(), min_size=6, max_size=6), sysctl=st.booleans(),
       prog=st.sampled_from(PROGS), closing_first=st.booleans(), cpu=st.integers(0, 3),
       hashes=st.lists(st.one_of(st.none(), st.integers(0, 2**32 - 1)), max_size=12))
def test_a_queue_migrates_as_its_children_one_by_one(profile, n, cpus, established, sysctl, prog,
                                                     closing_first, cpu, hashes):
    label = {"group": "tcp 127.0.0.1:8080", "seq": 7, "migrated_from": (0, 7, cpu)}
    net, closing = group(profile, n, cpus, established, sysctl, prog, closing_first, cpu)
    bulk = migrate_queue_traced(closing, child_of(net), hashes, **label)
    bulk_mib = dict(net.mib)
    net, closing = group(profile, n, cpus, established, sysctl, prog, closing_first, cpu)
    one_by_one = []
    for hash in hashes:
        nsk, pick = migrate_traced(closing, child_of(net)(), hash)
        one_by_one.append((nsk, replace_pick(pick, **label)))
    assert [(type(nsk), getattr(nsk, "sk_id", None), pick) for nsk, pick in bulk] == \
        [(type(nsk), getattr(nsk, "sk_id", None), pick) for nsk, pick in one_by_one]
    assert [list(p.__dict__) for _, p in bulk] == [list(p.__dict__) for _, p in one_by_one]
    assert bulk_mib == dict(net.mib)


def test_the_queue_of_a_group_without_live_listeners_is_reset():
    net, closing = group("6.13", 1, [-1] * 6, [False] * 6, True, "none", True, 0)
    out = migrate_queue_traced(closing, child_of(net), [5, None, 2**31], group="g")
    assert [nsk for nsk, _ in out] == [None, None, None]
    assert [p.sk for _, p in out] == [-1, -1, -1]


PICK_VALUES = {
    "unknown": st.one_of(st.none(), st.sampled_from(["no-hash", "no-cpu"])),
    "group": st.one_of(st.none(), st.text(max_size=8)), "reuseport_id": st.integers(-1, 9),
    "hash": st.one_of(st.none(), st.integers(0, 2**32 - 1)),
    "cpu": st.one_of(st.none(), st.integers(0, 3)), "num_socks": st.integers(0, 9),
    "start": st.one_of(st.none(), st.integers(0, 9)), "socks": st.lists(st.integers(0, 9)).map(tuple),
    "dropped": st.booleans(), "seq": st.one_of(st.none(), st.integers(0, 99)),
    "migrated_from": st.one_of(st.none(), st.tuples(st.integers(0, 9), st.integers(0, 99),
                                                    st.integers(0, 3))),
}


@settings(max_examples=200, deadline=None)
@given(sk=st.integers(-1, 9), reason=st.sampled_from(["migration", "hash"]),
       values=st.fixed_dictionaries({}, optional=PICK_VALUES))
def test_new_pick_is_the_pick_its_init_makes(sk, reason, values):
    made, built = new_pick(sk, reason, **values), Pick(sk=sk, reason=reason, **values)
    assert made == built and hash(made) == hash(built)
    assert list(made.__dict__.items()) == list(built.__dict__.items())


def test_new_pick_refuses_what_pick_has_no_field_for():
    with pytest.raises(TypeError):
        new_pick(-1, "migration", colour="red")
