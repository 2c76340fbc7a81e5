"""Kernel-layer events: direct calls, return-code verdicts, and the bulk selection seam."""

from __future__ import annotations

import numpy as np

from tracebuilder import TraceBuilder, slot_hash
from tracekit.replay import engine as engine_module
from tracekit.replay import replay


def kernel_trace(n_select: int = 300, wrong: tuple[int, ...] = ()) -> TraceBuilder:
    b = TraceBuilder()
    b.add("reuseport_alloc", sk=1, value=0, ret=0)
    for sk in (2, 3, 4):
        b.add("reuseport_add_sock", sk=sk, sk2=1, value=0, ret=0)
    b.add("reuseport_detach_sock", sk=2)  # sk 4 moves into slot 1: [1, 4, 3]
    rng = np.random.default_rng(7)
    ids = [1, 4, 3]
    for i, h in enumerate(rng.integers(0, 2**32, n_select).tolist()):
        observed = ids[(h * 3) >> 32]
        if i in wrong:
            observed = 3 if observed != 3 else 1
        b.add("reuseport_select_sock", sk=1, hash=h, cpu=0, observed=observed)
    b.add("reuseport_add_sock", sk=5, sk2=1, value=0, ret=-16)  # model says 0
    return b


def test_bulk_and_faithful_paths_agree(tmp_path, monkeypatch):
    path = kernel_trace(wrong=(10, 200)).write(tmp_path / "k.parquet")
    fast = replay(path, results=True)
    monkeypatch.setattr(engine_module, "BULK", False)
    slow = replay(path, results=True)
    assert fast.summary == slow.summary
    assert fast.decisions.drop(columns="explanation").equals(slow.decisions.drop(columns="explanation"))
    assert fast.summary["mismatched"] == 3


def test_bulk_mismatches_are_named_and_explained(tmp_path):
    b = kernel_trace(wrong=(10, 200))
    path = b.write(tmp_path / "k.parquet")
    r = replay(path)
    selects = [m for m in r.summary["mismatches"] if m["event"] == "reuseport_select_sock"]
    assert [m["seq"] for m in selects] == [6 + 10, 6 + 200]
    assert all(m["explanation"].startswith("hash 0x") for m in selects)
    assert ("socks[1] is sk 4, which moved into slot 1 when sk 2 was detached at seq 5 -> "
            "expected sk 4, observed sk 3") in selects[1]["explanation"]
    ret = [m for m in r.summary["mismatches"] if m["reason"] == "ret"]
    assert ret[0]["expected"] == 0 and ret[0]["observed"] == -16
    assert "-EBUSY" in ret[0]["explanation"]
    # the kernel refused sk 5 (-EBUSY): after the mismatch the model follows it, sk 5 stays out
    assert r.summary["groups"][0]["socks"] == [1, 4, 3]


def test_select_without_hash_is_unknown(tmp_path):
    b = TraceBuilder()
    b.add("reuseport_alloc", sk=1, value=0, ret=0)
    b.add("reuseport_add_sock", sk=2, sk2=1, value=0, ret=0)
    b.add("reuseport_select_sock", sk=1, cpu=0, observed=2)
    b.add("reuseport_select_sock", sk=1, hash=slot_hash(1, 2), cpu=0, observed=2)
    r = replay(b.write(tmp_path / "k.parquet"))
    assert (r.summary["unknown"], r.summary["matched"]) == (1, 3)  # 2 return codes + 1 select
