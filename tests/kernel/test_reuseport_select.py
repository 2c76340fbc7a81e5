"""Selection: reuseport_select_sock, reuseport_select_sock_by_hash, run_bpf_filter, eBPF policies."""

from __future__ import annotations

import pytest

from tracekit.kernel import cbpf
from tracekit.kernel.bpf import DROP, UNKNOWN, BpfProg, ErrPtr, Skb
from tracekit.kernel.sock import TCP_ESTABLISHED
from tracekit.kernel.sock_reuseport import (
    reciprocal_scale,
    reuseport_add_sock,
    reuseport_select_sock,
    reuseport_stop_listen_sock,
    reuseport_update_incoming_cpu,
)

RET_A = (cbpf.BPF_RET | cbpf.BPF_A, 0, 0, 0)


def hash_for(index: int, n: int) -> int:
    """A u32 hash that reciprocal_scale() maps to `index` of `n`."""
    h = (index << 32) // n + 1
    assert reciprocal_scale(h, n) == index
    return h


def test_reciprocal_scale():
    """include/linux/math.h: (u32)(((u64) val * ep_ro) >> 32)."""
    assert reciprocal_scale(0, 7) == 0
    assert reciprocal_scale(0xFFFFFFFF, 7) == 6
    assert reciprocal_scale(0x80000000, 4) == 2
    assert reciprocal_scale(0x1_0000_0003, 4) == 0  # only the low 32 bits count


def test_select_without_group_is_null(net, make_sock):
    """reuseport_select_sock: !reuse -> goto out (NULL)."""
    assert reuseport_select_sock(make_sock(net, 1), 123, None, 0) is None


def test_select_with_no_live_socks_is_null(net, make_group):
    """reuseport_select_sock: socks == 0 (all in the closed section) -> NULL."""
    net.sysctl_tcp_migrate_req = 1
    socks = make_group(net, 2)
    for sk in socks:
        reuseport_stop_listen_sock(sk)
    assert reuseport_select_sock(socks[0], 5, None, 0) is None


@pytest.mark.parametrize("profile", ["net", "net_5_14"])
def test_select_by_hash_picks_reciprocal_scale_slot(profile, request, make_group):
    """reuseport_select_sock_by_hash: i = reciprocal_scale(hash, num_socks); socks[i]."""
    net = request.getfixturevalue(profile)
    socks = make_group(net, 5)
    for index in range(5):
        assert reuseport_select_sock(socks[0], hash_for(index, 5), None, 0) is socks[index]


@pytest.mark.parametrize("profile", ["net", "net_5_14"])
def test_select_by_hash_skips_established_and_wraps(profile, request, make_group):
    """reuseport_select_sock_by_hash: sk_state == TCP_ESTABLISHED -> i++, wrap to 0 at num_socks."""
    net = request.getfixturevalue(profile)
    socks = make_group(net, 4)
    socks[3].sk_state = TCP_ESTABLISHED
    socks[0].sk_state = TCP_ESTABLISHED
    assert reuseport_select_sock(socks[0], hash_for(3, 4), None, 0) is socks[1]
    assert reuseport_select_sock(socks[0], hash_for(2, 4), None, 0) is socks[2]


@pytest.mark.parametrize("profile", ["net", "net_5_14"])
def test_select_by_hash_all_established_is_null(profile, request, make_group):
    """reuseport_select_sock_by_hash: back at j without a candidate -> NULL (first_valid_sk NULL)."""
    net = request.getfixturevalue(profile)
    socks = make_group(net, 3)
    for sk in socks:
        sk.sk_state = TCP_ESTABLISHED
    assert reuseport_select_sock(socks[0], hash_for(1, 3), None, 0) is None


def test_incoming_cpu_prefers_matching_cpu(net, make_group):
    """6.2 reuseport_select_sock_by_hash: reuse->incoming_cpu != 0 -> the first socket from i whose
    sk_incoming_cpu == raw_smp_processor_id() wins."""
    socks = make_group(net, 4)
    reuseport_update_incoming_cpu(socks[1], 2)
    reuseport_update_incoming_cpu(socks[3], 5)
    net.cpu = 5
    assert reuseport_select_sock(socks[0], hash_for(0, 4), None, 0) is socks[3]
    net.cpu = 2
    assert reuseport_select_sock(socks[0], hash_for(2, 4), None, 0) is socks[1]


def test_incoming_cpu_falls_back_to_first_valid_sk(net, make_group):
    """6.2 reuseport_select_sock_by_hash: no CPU match -> first_valid_sk, the first
    non-ESTABLISHED socket from i (ESTABLISHED ones never match, even on the right CPU)."""
    socks = make_group(net, 4)
    reuseport_update_incoming_cpu(socks[0], 1)
    socks[2].sk_state = TCP_ESTABLISHED
    reuseport_update_incoming_cpu(socks[2], 7)
    net.cpu = 7
    assert reuseport_select_sock(socks[0], hash_for(2, 4), None, 0) is socks[3]
    assert reuseport_select_sock(socks[0], hash_for(1, 4), None, 0) is socks[1]


def test_incoming_cpu_ignored_before_6_2(net_5_14, make_group):
    """5.14 reuseport_select_sock_by_hash has no incoming_cpu: socks[reciprocal_scale()] wins."""
    socks = make_group(net_5_14, 4)
    reuseport_update_incoming_cpu(socks[3], 5)
    net_5_14.cpu = 5
    assert socks[3].sk_incoming_cpu == 5
    assert socks[0].sk_reuseport_cb.incoming_cpu == 0
    assert reuseport_select_sock(socks[0], hash_for(0, 4), None, 0) is socks[0]


def test_incoming_cpu_counter_zero_means_o1_path(net, make_group):
    """6.2: !READ_ONCE(reuse->incoming_cpu) -> return the first candidate, whatever the CPU."""
    socks = make_group(net, 3)
    reuseport_update_incoming_cpu(socks[2], 4)
    reuseport_update_incoming_cpu(socks[2], -1)
    assert socks[0].sk_reuseport_cb.incoming_cpu == 0
    net.cpu = 4
    assert reuseport_select_sock(socks[0], hash_for(0, 3), None, 0) is socks[0]


# --- classic BPF: run_bpf_filter ----------------------------------------------------------------

def attach_cbpf_returning(socks, k: int) -> None:
    socks[0].sk_reuseport_cb.prog = BpfProg.cbpf(((cbpf.BPF_RET | cbpf.BPF_K, 0, 0, k),))


def test_cbpf_index_in_range_selects_that_slot(net, make_group):
    """run_bpf_filter: index < socks -> reuse->socks[index], no hash involved."""
    socks = make_group(net, 3)
    attach_cbpf_returning(socks, 2)
    assert reuseport_select_sock(socks[0], hash_for(0, 3), Skb(payload=b""), 8) is socks[2]


def test_cbpf_selects_established_socket_too(net, make_group):
    """run_bpf_filter does not look at sk_state: only the hash fallback skips ESTABLISHED."""
    socks = make_group(net, 3)
    socks[1].sk_state = TCP_ESTABLISHED
    attach_cbpf_returning(socks, 1)
    assert reuseport_select_sock(socks[0], 0, Skb(), 8) is socks[1]


def test_cbpf_index_out_of_range_falls_back_to_hash(net, make_group):
    """run_bpf_filter: index >= socks -> NULL; reuseport_select_sock: !sk2 -> select_by_hash."""
    socks = make_group(net, 3)
    attach_cbpf_returning(socks, 3)
    assert reuseport_select_sock(socks[0], hash_for(1, 3), Skb(), 8) is socks[1]
    attach_cbpf_returning(socks, 0xFFFFFFFF)
    assert reuseport_select_sock(socks[0], hash_for(2, 3), Skb(), 8) is socks[2]


def test_cbpf_without_skb_uses_hash(net, make_group):
    """reuseport_select_sock: !skb -> goto select_by_hash."""
    socks = make_group(net, 3)
    attach_cbpf_returning(socks, 0)
    assert reuseport_select_sock(socks[0], hash_for(2, 3), None, 8) is socks[2]


def test_cbpf_reading_missing_bytes_is_unknown(net, make_group):
    """A classic program that reads past a truncated payload gives UNKNOWN, not a guess."""
    socks = make_group(net, 3)
    socks[0].sk_reuseport_cb.prog = BpfProg.cbpf(
        ((cbpf.BPF_LD | cbpf.BPF_W | cbpf.BPF_ABS, 0, 0, 4), RET_A))
    assert reuseport_select_sock(socks[0], 0, Skb(payload=b"ab", len=100), 8) is UNKNOWN


def test_cbpf_selftest_modulo_program_steers_by_payload(net, make_group):
    """tools/testing/selftests/net/reuseport_bpf.c attach_cbpf(): A = skb[0:4]; A %= mod;
    return A. test_recv_order() sends htonl(data) and expects socket data % mod."""
    socks = make_group(net, 10)
    for mod in (10, 5):
        socks[0].sk_reuseport_cb.prog = BpfProg.cbpf((
            (cbpf.BPF_LD | cbpf.BPF_W | cbpf.BPF_ABS, 0, 0, 0),
            (cbpf.BPF_ALU | cbpf.BPF_MOD, 0, 0, mod),
            RET_A,
        ))
        for data in range(20):
            skb = Skb(payload=data.to_bytes(4, "big"), len=4)
            assert reuseport_select_sock(socks[0], 0xDEAD, skb, 8) is socks[data % mod]


def test_cbpf_selftest_cpu_program(net, make_group):
    """tools/testing/selftests/net/reuseport_bpf_cpu.c attach_bpf(): A = raw_smp_processor_id();
    return A. A packet handled on CPU i lands on the i-th socket."""
    socks = make_group(net, 4)
    socks[0].sk_reuseport_cb.prog = BpfProg.cbpf((
        (cbpf.BPF_LD | cbpf.BPF_W | cbpf.BPF_ABS, 0, 0, (cbpf.SKF_AD_OFF + cbpf.SKF_AD_CPU) & 0xFFFFFFFF),
        RET_A,
    ))
    for cpu in range(4):
        assert reuseport_select_sock(socks[0], 0, Skb(cpu=cpu), 8) is socks[cpu]
    # More CPUs than sockets: out of range -> hash.
    assert reuseport_select_sock(socks[0], hash_for(1, 4), Skb(cpu=9), 8) is socks[1]


# --- eBPF: bpf_run_sk_reuseport -------------------------------------------------------------------

def ebpf_group(net, make_group, policy=None, n=3):
    socks = make_group(net, n)
    socks[0].sk_reuseport_cb.prog = BpfProg.ebpf("steer")
    if policy is not None:
        net.ebpf_policies["steer"] = policy
    return socks


def test_ebpf_policy_selects(net, make_group):
    """bpf_run_sk_reuseport: SK_PASS with selected_sk -> that socket."""
    seen = []

    def policy(md):
        seen.append(md)
        return 12

    socks = make_group(net, 3, first_id=10)
    socks[0].sk_reuseport_cb.prog = BpfProg.ebpf("steer")
    net.ebpf_policies["steer"] = policy
    net.cpu = 3
    assert reuseport_select_sock(socks[0], 77, Skb(payload=b"x"), 8) is socks[2]
    md = seen[0]
    assert (md.hash, md.sk, md.socks, md.migrating_sk, md.cpu, md.payload) == (
        77, 10, (10, 11, 12), None, 3, b"x")


def test_ebpf_pass_without_selection_falls_back_to_hash(net, make_group):
    """bpf_run_sk_reuseport: SK_PASS, no selected_sk -> NULL -> select_by_hash."""
    socks = ebpf_group(net, make_group, lambda md: None)
    assert reuseport_select_sock(socks[0], hash_for(2, 3), Skb(), 8) is socks[2]


def test_ebpf_selecting_a_stranger_falls_back_to_hash(net, make_group):
    """bpf_sk_select_reuseport() refuses a socket of another group: no selection -> hash."""
    socks = ebpf_group(net, make_group, lambda md: 999)
    assert reuseport_select_sock(socks[0], hash_for(1, 3), Skb(), 8) is socks[1]


def test_ebpf_drop_is_err_ptr_without_hash_fallback(net, make_group):
    """bpf_run_sk_reuseport: SK_DROP -> ERR_PTR(-ECONNREFUSED); !sk2 is false -> returned as is."""
    socks = ebpf_group(net, make_group, lambda md: DROP)
    result = reuseport_select_sock(socks[0], 0, Skb(), 8)
    assert isinstance(result, ErrPtr) and result.err == -111


def test_ebpf_unregistered_is_unknown(net, make_group):
    """An eBPF program with no registered policy: the model cannot know -> UNKNOWN."""
    socks = ebpf_group(net, make_group)
    assert reuseport_select_sock(socks[0], 0, Skb(), 8) is UNKNOWN


def test_ebpf_without_skb_uses_hash(net, make_group):
    """reuseport_select_sock: !skb -> select_by_hash even with a program."""
    socks = ebpf_group(net, make_group)
    assert reuseport_select_sock(socks[0], hash_for(0, 3), None, 8) is socks[0]


def test_select_after_add_sees_new_socket(net, make_group, make_sock):
    """__reuseport_add_sock appends at num_socks: hashes spread over the new count."""
    socks = make_group(net, 2)
    sk = make_sock(net, 2)
    reuseport_add_sock(sk, socks[0], False)
    assert reuseport_select_sock(socks[0], hash_for(2, 3), None, 0) is sk
