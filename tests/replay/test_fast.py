"""The bulk selection path answers exactly what `reuseport_select_sock` answers, row by row."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tracekit.kernel.bpf import BpfProg
from tracekit.kernel.net import Net
from tracekit.kernel.profiles import PROFILES
from tracekit.kernel.sock import IPPROTO_TCP, IPPROTO_UDP, TCP_ESTABLISHED, TCP_LISTEN, Sock
from tracekit.kernel.sock_reuseport import (
    reuseport_add_sock,
    reuseport_alloc,
    reuseport_attach_prog,
    reuseport_detach_sock,
    reuseport_select_sock,
    reuseport_stop_listen_sock,
    reuseport_update_incoming_cpu,
)
from tracekit.replay.fast import (FAITHFUL, NO_SOCKET, GroupState, select_many, select_run,
                                  select_segment, tabulate)

U32 = st.integers(0, 2**32 - 1)
HASHES = st.lists(st.one_of(st.sampled_from([0, 1, 2**31, 2**32 - 1]), U32), min_size=1,
                  max_size=64)


@st.composite
def groups(draw):
    """A group built through the model's own calls: adds, removals (which reorder the array),
    migration-capable stops (closed sockets still count in `incoming_cpu`), ESTABLISHED members
    and SO_INCOMING_CPU settings."""
    net = Net(profile=draw(st.sampled_from(PROFILES)),
              sysctl_tcp_migrate_req=draw(st.sampled_from([0, 1])))
    proto = draw(st.sampled_from([IPPROTO_TCP, IPPROTO_UDP]))
    size = draw(st.integers(1, 24))
    socks = [Sock(sk_id=10 + i, sk_net=net, sk_protocol=proto, sk_state=TCP_LISTEN,
                  sk_reuseport=True) for i in range(size)]
    for sk in socks:
        if draw(st.booleans()):
            reuseport_update_incoming_cpu(sk, draw(st.integers(-1, 3)))
    assert reuseport_alloc(socks[0], False) == 0
    for sk in socks[1:]:
        assert reuseport_add_sock(sk, socks[0], False) == 0
    members = list(socks)
    for sk in draw(st.lists(st.sampled_from(socks), max_size=size - 1, unique=True)):
        if draw(st.booleans()):
            reuseport_stop_listen_sock(sk)
        else:
            reuseport_detach_sock(sk)
        members.remove(sk)
    for sk in members:
        if draw(st.integers(0, 3)) == 0:
            sk.sk_state = TCP_ESTABLISHED
        if draw(st.integers(0, 4)) == 0:
            reuseport_update_incoming_cpu(sk, draw(st.integers(-1, 3)))
    return members[0], members


def faithful(first: Sock, hashes: list[int], cpus: list[int]) -> list[int]:
    out = []
    for h, cpu in zip(hashes, cpus):
        first.sk_net.cpu = cpu
        chosen = reuseport_select_sock(first, h, None, 0)
        out.append(NO_SOCKET if chosen is None else chosen.sk_id)
    return out


@settings(max_examples=400, deadline=None)
@given(groups(), HASHES, st.data())
def test_select_run_equals_faithful_path(group, hashes, data):
    first, _ = group
    cpus = data.draw(st.lists(st.integers(0, 4), min_size=len(hashes), max_size=len(hashes)))
    bulk = select_run(first.sk_reuseport_cb, np.array(hashes, dtype=np.uint32),
                      np.array(cpus, dtype=np.int32))
    assert bulk.dtype == np.int64
    assert bulk.tolist() == faithful(first, hashes, cpus)


@settings(max_examples=100, deadline=None)
@given(groups(), HASHES, st.integers(0, 4))
def test_without_cpus_the_namespace_cpu_is_used(group, hashes, cpu):
    first, _ = group
    first.sk_net.cpu = cpu
    bulk = select_run(first.sk_reuseport_cb, np.array(hashes, dtype=np.uint32), None)
    assert bulk.tolist() == faithful(first, hashes, [cpu] * len(hashes))


@settings(max_examples=50, deadline=None)
@given(st.lists(groups(), min_size=1, max_size=3), st.data())
def test_select_many_interleaves_groups(group_list, data):
    n = data.draw(st.integers(1, 40))
    index = data.draw(st.lists(st.integers(0, len(group_list)), min_size=n, max_size=n))
    hashes = data.draw(st.lists(U32, min_size=n, max_size=n))
    cpus = data.draw(st.lists(st.integers(0, 4), min_size=n, max_size=n))
    reuses = [first.sk_reuseport_cb for first, _ in group_list] + [None]
    bulk = select_many(reuses, np.array(index), np.array(hashes, dtype=np.uint32),
                       np.array(cpus, dtype=np.int32))
    expected = []
    for g, h, cpu in zip(index, hashes, cpus):
        expected += [NO_SOCKET] if g == len(group_list) else faithful(group_list[g][0], [h], [cpu])
    assert bulk.tolist() == expected


def test_every_member_established_selects_none():
    net = Net(profile=PROFILES[0])
    socks = [Sock(sk_id=i, sk_net=net, sk_protocol=IPPROTO_UDP) for i in range(3)]
    reuseport_alloc(socks[0], False)
    for sk in socks[1:]:
        reuseport_add_sock(sk, socks[0], False)
        sk.sk_state = TCP_ESTABLISHED
    socks[0].sk_state = TCP_ESTABLISHED
    out = select_run(socks[0].sk_reuseport_cb, np.array([0, 2**32 - 1], dtype=np.uint32))
    assert out.tolist() == [NO_SOCKET, NO_SOCKET]


def test_attached_program_defers_to_the_faithful_path():
    net = Net()
    socks = [Sock(sk_id=i, sk_net=net, sk_reuseport=True, hashed=True) for i in range(2)]
    reuseport_alloc(socks[0], False)
    reuseport_add_sock(socks[1], socks[0], False)
    assert reuseport_attach_prog(socks[0], BpfProg.cbpf(((0x06, 0, 0, 0),))) == 0
    out = select_run(socks[0].sk_reuseport_cb, np.array([5, 6], dtype=np.uint32))
    assert out.tolist() == [FAITHFUL, FAITHFUL]


@settings(max_examples=30, deadline=None)
@given(st.lists(groups(), min_size=17, max_size=20), st.data())
def test_select_many_with_many_groups_sorts_rows_by_group(group_list, data):
    n = data.draw(st.integers(1, 60))
    index = data.draw(st.lists(st.integers(0, len(group_list) - 1), min_size=n, max_size=n))
    hashes = data.draw(st.lists(U32, min_size=n, max_size=n))
    cpus = [0] * n
    bulk = select_many([first.sk_reuseport_cb for first, _ in group_list], np.array(index),
                       np.array(hashes, dtype=np.uint32), np.array(cpus, dtype=np.int32))
    expected = [faithful(group_list[g][0], [h], [0])[0] for g, h in zip(index, hashes)]
    assert bulk.tolist() == expected


@settings(max_examples=50, deadline=None)
@given(st.lists(groups(), min_size=1, max_size=3), st.data())
def test_select_segment_finds_each_rows_group_through_any_member(group_list, data):
    members = [(first, sk) for first, live in group_list for sk in live]
    members.append((None, Sock(sk_id=999, sk_net=Net())))  # a socket outside any group
    n = data.draw(st.integers(1, 40))
    picks = data.draw(st.lists(st.integers(0, len(members) - 1), min_size=n, max_size=n))
    hashes = data.draw(st.lists(U32, min_size=n, max_size=n))
    cpus = data.draw(st.lists(st.integers(0, 4), min_size=n, max_size=n))
    by_id = {id(sk): sk for _, sk in members}
    for i, (_, sk) in enumerate(members):
        sk.sk_id = 1000 + i  # ids unique across the drawn groups
    sk_ids = np.array([members[p][1].sk_id for p in picks], dtype=np.int64)
    resolve = {sk.sk_id: sk.sk_reuseport_cb for sk in by_id.values()}.__getitem__
    expected, group_index, reuses = select_segment(
        resolve, sk_ids, np.array(hashes, dtype=np.uint32), np.array(cpus, dtype=np.int32))
    for row, p in enumerate(picks):
        first, sk = members[p]
        assert reuses[group_index[row]] is sk.sk_reuseport_cb
        want = NO_SOCKET if first is None else faithful(sk, [hashes[row]], [cpus[row]])[0]
        assert expected[row] == want
    assert len(reuses) == len({id(sk.sk_reuseport_cb) for sk in (members[p][1] for p in picks)})


@settings(max_examples=200, deadline=None)
@given(st.lists(groups(), min_size=1, max_size=4), st.data())
def test_batch_tables_answer_what_reuseport_select_sock_answers(group_list, data):
    """Many group states at once (one per group, plus a socket outside any group), each row on
    its own CPU: `tabulate` + `lookup` give the faithful answer."""
    states = [GroupState.of(first.sk_reuseport_cb) for first, _ in group_list] + [None]
    n = data.draw(st.integers(1, 60))
    index = data.draw(st.lists(st.integers(0, len(states) - 1), min_size=n, max_size=n))
    hashes = data.draw(st.lists(U32, min_size=n, max_size=n))
    cpus = data.draw(st.lists(st.integers(0, 4), min_size=n, max_size=n))
    tables = tabulate(states, max(cpus))
    expected, _answer, _start = tables.lookup(np.array(index), np.array(hashes, dtype=np.uint32),
                                              np.array(cpus))
    faithful_answers = [NO_SOCKET if g == len(group_list) else faithful(group_list[g][0], [h], [c])[0]
                        for g, h, c in zip(index, hashes, cpus)]
    assert expected.tolist() == faithful_answers


@settings(max_examples=100, deadline=None)
@given(groups(), U32, st.integers(0, 4))
def test_a_replica_selects_as_its_group_did(group, hash, cpu):
    first, _ = group
    state = GroupState.of(first.sk_reuseport_cb)
    replica = state.replica(first.sk_id, cpu)
    chosen = reuseport_select_sock(replica, hash, None, 0)
    assert (NO_SOCKET if chosen is None else chosen.sk_id) == faithful(first, [hash], [cpu])[0]
