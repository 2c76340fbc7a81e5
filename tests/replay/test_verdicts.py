"""Every verdict path of replay: match, mismatch (followed, not cascaded), unknown."""

from __future__ import annotations

import json

import pytest

from tracebuilder import TraceBuilder, slot_hash
from tracekit.errors import TracekitError
from tracekit.kernel.cbpf import encode_sock_filter
from tracekit.replay import replay, write_results

LD_W_ABS_0_RET_A = encode_sock_filter([(0x20, 0, 0, 0), (0x16, 0, 0, 0)])


def test_match(tmp_path, builder):
    b = builder.tcp_listeners([1, 2, 3])
    for i in range(3):
        b.conn(40000 + i, slot_hash(i, 3)).accept(i + 1, 40000 + i)
    r = replay(b.write(tmp_path / "t.parquet"))
    assert (r.summary["matched"], r.summary["mismatched"], r.exit_code) == (3, 0, 0)
    assert r.decisions.empty
    (group,) = r.groups
    assert group["group"] == "tcp 127.0.0.1:8080" and group["socks"] == [1, 2, 3]
    assert group["load"] == {"1": 1, "2": 1, "3": 1}


def test_mismatch_is_explained_and_followed_without_cascade(tmp_path, builder):
    b = builder.tcp_listeners([1, 2, 3, 4])
    b.add("close", sk=2, cpu=1)  # sk 4 moves into slot 1
    h = slot_hash(1, 3)
    b.conn(40000, h).accept(1, 40000)          # wrong socket observed
    b.conn(40001, slot_hash(0, 3)).accept(1, 40001)
    r = replay(b.write(tmp_path / "t.parquet"))
    assert r.exit_code == 1
    assert (r.summary["matched"], r.summary["mismatched"]) == (1, 1)
    (m,) = r.summary["mismatches"]
    assert (m["seq"], m["expected"], m["observed"], m["reason"]) == (19, 4, 1, "hash")
    assert m["explanation"].startswith(
        f"hash 0x{h:08x} -> reciprocal_scale(hash, 3) = 1 -> socks[1] is sk 4, which moved into "
        "slot 1 when sk 2 closed at seq 17 -> expected sk 4, observed sk 1")
    assert "seq 17 close sk 2: sk 4 moved from slot 3 to slot 1, sk 2 left slot 1" in m["explanation"]


def test_reset_expected_but_accepted(tmp_path, builder):
    b = builder.tcp_listeners([1])
    b.add("close", sk=1, cpu=0)
    b.conn(40000, 5).accept(1, 40000)
    r = replay(b.write(tmp_path / "t.parquet"))
    (m,) = r.summary["mismatches"]
    assert (m["expected"], m["observed"], m["reason"]) == (-1, 1, "no-listener")
    assert m["explanation"].endswith("expected reset, observed sk 1")


def test_migration_prediction_and_reset_observation(tmp_path, builder):
    b = builder.tcp_listeners([1, 2])
    b.add("sysctl", name="net.ipv4.tcp_migrate_req", value=1)
    b.conn(40000, slot_hash(0, 2))
    b.add("close", sk=1, cpu=3)
    b.add("reset", proto="tcp", laddr="127.0.0.1", lport=8080, raddr="127.0.0.1", rport=40000)
    r = replay(b.write(tmp_path / "t.parquet"))
    (m,) = r.summary["mismatches"]
    assert (m["expected"], m["observed"], m["reason"]) == (2, -1, "migration")
    assert "sk 1 stopped listening at seq 11 on cpu 3" in m["explanation"]
    assert r.groups[0]["migrations"] == {"migrated": 1, "reset": 0}


def test_no_hash_is_unknown_never_mismatch(tmp_path, builder):
    b = builder.tcp_listeners([1, 2])
    b.conn(40000, None).accept(2, 40000)
    r = replay(b.write(tmp_path / "t.parquet"))
    assert (r.summary["unknown"], r.summary["mismatched"], r.exit_code) == (1, 0, 0)
    assert r.summary["verdict"] == "unknown-only"
    assert r.summary["unknown_reasons"] == {"no-hash": 1}
    assert r.decisions.iloc[0]["verdict"] == "unknown"
    # the group is known even when the choice inside it is not: its counts add up
    assert r.decisions.iloc[0]["group"] == "tcp 127.0.0.1:8080"
    assert [(g["group"], g["unknown"]) for g in r.groups] == [("tcp 127.0.0.1:8080", 1)]


def test_unregistered_ebpf_is_unknown_and_a_policy_decides(tmp_path, builder):
    b = builder.tcp_listeners([1, 2])
    b.add("setsockopt", sk=1, name="SO_ATTACH_REUSEPORT_EBPF", prog=b"pick_last", ret=0)
    b.conn(40000, slot_hash(0, 2)).accept(2, 40000)
    path = b.write(tmp_path / "t.parquet")
    r = replay(path)
    assert r.summary["unknown_reasons"] == {"unregistered-prog": 1}
    assert r.groups[0]["prog"] == "ebpf:pick_last"
    r = replay(path, policies={"pick_last": lambda md: md.socks[-1]})
    assert (r.summary["matched"], r.summary["unknown"]) == (1, 0)
    r = replay(path, policies={"pick_last": lambda md: md.socks[0]})
    assert r.summary["mismatches"][0]["reason"] == "ebpf"


def test_cbpf_reading_missing_payload_is_unknown(tmp_path, builder):
    b = builder
    for sk in (1, 2):
        b.add("socket", sk=sk, proto="udp", family=4)
        b.add("setsockopt", sk=sk, name="SO_REUSEPORT", value=1, ret=0)
        b.add("bind", sk=sk, laddr="127.0.0.1", lport=53, ret=0)
    b.add("setsockopt", sk=1, name="SO_ATTACH_REUSEPORT_CBPF", prog=LD_W_ABS_0_RET_A, ret=0)
    for rport, payload in ((5000, (1).to_bytes(4, "big")), (5001, None)):
        b.add("datagram", proto="udp", laddr="127.0.0.1", lport=53, raddr="127.0.0.1",
              rport=rport, hash=1, cpu=0, payload=payload)
        b.add("recv", sk=2, proto="udp", laddr="127.0.0.1", lport=53, raddr="127.0.0.1",
              rport=rport)
    r = replay(b.write(tmp_path / "t.parquet"), explain_all=True)
    assert (r.summary["matched"], r.summary["unknown"]) == (1, 1)
    assert r.summary["unknown_reasons"] == {"cbpf-unknown": 1}
    assert r.groups[0]["prog"] == "cbpf"


def test_recv_without_datagram_is_lost_events(tmp_path, builder):
    b = builder.add("recv", sk=1, proto="udp", laddr="127.0.0.1", lport=53, raddr="127.0.0.1",
                    rport=1)
    r = replay(b.write(tmp_path / "t.parquet"))
    assert r.summary["unknown_reasons"] == {"lost-events": 1}


def test_summary_is_byte_identical_on_two_runs(tmp_path, builder):
    b = builder.tcp_listeners([1, 2, 3])
    for i in range(6):
        b.conn(40000 + i, slot_hash(i % 3, 3, i)).accept(1, 40000 + i)
    path = b.write(tmp_path / "t.parquet")
    texts = [json.dumps(replay(path).summary, sort_keys=True, indent=2) for _ in range(2)]
    assert texts[0] == texts[1]
    assert json.loads(texts[0])["format"] == "tracekit-result/1"


def test_profile_choice_and_invalid_profile(tmp_path, builder):
    path = builder.tcp_listeners([1]).write(tmp_path / "t.parquet", kernel="5.15.0-91")
    assert replay(path).summary["profile"] == {
        "name": "5.14",
        "chosen_by": "tracekit.kernel=5.15.0-91 (no tracekit.kernel.version: the sublevel is hidden, "
                     "taken to carry no backport (none known for 5.15); --profile fit checks)",
        "switches": ["listener migration and the closed section (5.14)"],
    }
    assert replay(path, profile="5.14").summary["profile"]["chosen_by"] == "--profile"
    with pytest.raises(TracekitError, match="unknown kernel profile"):
        replay(path, profile="9.9")
    nometa = TraceBuilder().tcp_listeners([1]).write(tmp_path / "n.parquet", kernel=None)
    assert replay(nometa).summary["profile"]["chosen_by"] == "default (newest)"


def test_results_hold_every_decision_in_order_and_write(tmp_path, builder):
    b = builder.tcp_listeners([1, 2])
    for i in range(4):
        b.conn(40000 + i, slot_hash(i % 2, 2)).accept(1 + (i % 2) if i != 3 else 1, 40000 + i)
    path = b.write(tmp_path / "t.parquet")
    r = replay(path, results=True)
    assert list(r.decisions["verdict"]) == ["match", "match", "match", "mismatch"]
    assert list(r.decisions["seq"]) == sorted(r.decisions["seq"])
    out = write_results(r, tmp_path / "results.parquet")
    import pyarrow.parquet as pq

    assert pq.read_table(out).num_rows == 4
    streamed = tmp_path / "streamed.parquet"
    r2 = replay(path, results=streamed)
    assert pq.read_table(streamed).equals(pq.read_table(out))
    assert len(r2.decisions) == 1


def _udp_pair_and_datagrams(builder, received: list[int]):
    """Two UDP sockets in one group; three datagrams to slots 0, 1, 0; `received` lists the
    datagrams (by index) that a `recv` observed, on the socket the model predicts."""
    b = builder
    for sk in (1, 2):
        b.add("socket", sk=sk, proto="udp", family=4)
        b.add("setsockopt", sk=sk, name="SO_REUSEPORT", value=1, ret=0)
        b.add("bind", sk=sk, laddr="127.0.0.1", lport=5000, ret=0)
    flows = [(41000, slot_hash(0, 2), 1), (41001, slot_hash(1, 2), 2), (41002, slot_hash(0, 2), 1)]
    for rport, h, _ in flows:
        b.add("datagram", proto="udp", laddr="127.0.0.1", lport=5000, raddr="127.0.0.1",
              rport=rport, hash=h, cpu=0)
    for i in received:
        rport, _, sk = flows[i]
        b.add("recv", sk=sk, proto="udp", laddr="127.0.0.1", lport=5000, raddr="127.0.0.1", rport=rport)
    return b


def test_complete_observations_judge_a_datagram_nobody_received(tmp_path, builder):
    """`tracekit.observations=complete`: a datagram without a recv was dropped by the kernel; where
    the model delivered it, that is a mismatch on the datagram's own row."""
    b = _udp_pair_and_datagrams(builder, received=[0, 2])
    r = replay(b.write(tmp_path / "t.parquet", complete=True))
    assert (r.summary["decisions"], r.summary["matched"], r.summary["mismatched"]) == (3, 2, 1)
    (m,) = r.summary["mismatches"]
    datagram_seqs = [row["seq"] for row in b.rows if row["event"] == "datagram"]
    assert (m["event"], m["seq"], m["expected"], m["observed"]) == ("datagram", datagram_seqs[1], 2, -1)
    assert "observed none" in m["explanation"]


def test_without_complete_observations_a_missing_recv_is_not_judged(tmp_path, builder):
    b = _udp_pair_and_datagrams(builder, received=[0, 2])
    r = replay(b.write(tmp_path / "t.parquet"))
    assert (r.summary["decisions"], r.summary["mismatched"]) == (2, 0)
