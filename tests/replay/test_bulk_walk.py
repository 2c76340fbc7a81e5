"""The bulk walk against the per-row path on kernel-layer traces built to hit its edges: group
changes between selections, SO_INCOMING_CPU with and without the row's CPU, ESTABLISHED members,
a program attached mid-trace, a socket never seen joining, wrong observations, several hosts."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tracebuilder import TraceBuilder
from tracekit.kernel.cbpf import BPF_K, BPF_RET, encode_sock_filter
from tracekit.replay import engine
from tracekit.replay.api import replay


def edge_trace(host: str, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    b = TraceBuilder(host)
    b.add("reuseport_alloc", sk=1, value=0, ret=0)
    members = [1]
    for sk in range(2, 9):
        b.add("reuseport_add_sock", sk=sk, sk2=1, value=0, ret=0)
        members.append(sk)

    def selections(count: int, sk: int = 1) -> None:
        for _ in range(count):
            cpu = None if rng.random() < 0.1 else int(rng.integers(0, 4))
            observed = int(rng.choice(members)) if rng.random() < 0.5 else -1
            b.add("reuseport_select_sock", sk=sk, hash=int(rng.integers(0, 2**32)), cpu=cpu,
                  observed=observed)

    selections(40)
    b.add("reuseport_update_incoming_cpu", sk=3, value=2)
    selections(40)
    b.add("sk_state", sk=5, value=1)  # TCP_ESTABLISHED: skipped
    selections(40)
    b.add("reuseport_detach_sock", sk=2)
    members.remove(2)
    selections(30)
    b.add("reuseport_attach_prog", sk=1, prog=encode_sock_filter([(BPF_RET | BPF_K, 0, 0, 1)]),
          ret=0)
    selections(20)
    b.add("reuseport_detach_prog", sk=1, ret=0)
    selections(20, sk=99)  # a socket the trace never saw join a group: membership unknown
    selections(30)
    return b.rows


@pytest.fixture
def trace(tmp_path):
    from tracekit.trace import write_trace

    rows = edge_trace("h1", 1) + edge_trace("h2", 2)
    return write_trace(tmp_path / "edges.parquet", rows, {"tracekit.kernel": "6.18.0"},
                       source="test")


@pytest.mark.parametrize("explain_all", [False, True])
def test_the_bulk_walk_gives_what_the_per_row_path_gives(trace, monkeypatch, explain_all):
    bulk = replay(trace, results=True, explain_all=explain_all)
    monkeypatch.setattr(engine, "BULK", False)
    faithful = replay(trace, results=True, explain_all=explain_all)
    assert bulk.summary["mismatched"] > 100 and bulk.summary["unknown"] > 0
    assert bulk.decisions.equals(faithful.decisions)
    assert json.dumps(bulk.summary, sort_keys=True) == json.dumps(faithful.summary, sort_keys=True)


def test_replay_leaves_the_garbage_collector_as_it_found_it(trace):
    import gc

    assert gc.get_freeze_count() == 0 and gc.isenabled()
    replay(trace)
    assert gc.get_freeze_count() == 0 and gc.isenabled()
    gc.disable()
    try:
        replay(trace)
        assert not gc.isenabled()
    finally:
        gc.enable()
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        replay(trace)
        assert gc.get_freeze_count() == frozen
    finally:
        gc.unfreeze()
