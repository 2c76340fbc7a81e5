"""Generated kernel-layer stories: the bulk walk (`tracekit.replay.walk`) against the per-row path.

A story is a few sockets joining, leaving, shutting down and coming back to groups
(`reuseport_alloc`, `reuseport_add_sock` onto any socket, refused or not, `reuseport_detach_sock`,
`reuseport_stop_listen_sock`), their state and CPU changing, programs coming and going, with runs
of selections between; walked a few rows at a time (`engine.WALK_ROWS`), so snapshots and parked
sockets outlive a walk. Every decision, the summary and the membership timeline must be the
same both ways.
"""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tracekit.kernel.cbpf import BPF_K, BPF_RET, encode_sock_filter
from tracekit.replay import engine, walk
from tracekit.replay.api import replay
from tracekit.trace import write_trace

SOCKS = [1, 2, 3, 4, 5]
RETS = [None, 0, 0, 0, -16, -12]
PROGRAM = encode_sock_filter([(BPF_RET | BPF_K, 0, 0, 1)])


def _selections(draw, count: int, host: str) -> list[dict]:
    rows = []
    for _ in range(count):
        rows.append({"host": host, "event": "reuseport_select_sock",
                     "sk": draw(st.sampled_from(SOCKS)),
                     "hash": draw(st.integers(0, 2**32 - 1)),
                     "cpu": draw(st.sampled_from([None, 0, 1, 2, 2])),
                     "observed": draw(st.sampled_from([-1, *SOCKS]))})
    return rows


@st.composite
def kernel_story(draw, host: str = "h1") -> list[dict]:
    rows: list[dict] = []
    addressed = draw(st.sampled_from(["never", "always", "later"]))
    for step in range(draw(st.integers(1, 14))):
        kind = draw(st.sampled_from(["alloc", "add", "add", "add", "detach", "stop", "cpu",
                                     "state", "prog", "unprog", "migrate", "sysctl", "conns"]))
        sk = draw(st.sampled_from(SOCKS))
        row: dict = {"host": host, "sk": sk}
        if kind in ("alloc", "add"):
            row.update(event="reuseport_alloc" if kind == "alloc" else "reuseport_add_sock",
                       value=draw(st.sampled_from([0, 1])), ret=draw(st.sampled_from(RETS)))
            if kind == "add":
                # (onto itself too: a socket added to its own group sits in it twice, and a
                # pick's slot is the first holding it from the hash's start on, as the scan goes)
                row["sk2"] = draw(st.sampled_from(SOCKS))
            if addressed == "always" or (addressed == "later" and step >= 3):
                row.update(proto="tcp", laddr="127.0.0.1", lport=draw(st.sampled_from([80, 81])))
        elif kind == "detach":
            row.update(event="reuseport_detach_sock")
        elif kind == "stop":
            row.update(event="reuseport_stop_listen_sock", proto=draw(st.sampled_from(["tcp", "udp"])))
        elif kind == "cpu":
            row.update(event="reuseport_update_incoming_cpu", value=draw(st.sampled_from([-1, 0, 1, 2])))
        elif kind == "state":
            row.update(event="sk_state", value=draw(st.sampled_from([1, 10])))
        elif kind == "prog":
            row.update(event="reuseport_attach_prog", prog=PROGRAM, ret=0)
        elif kind == "unprog":
            row.update(event="reuseport_detach_prog", ret=draw(st.sampled_from([None, 0])))
        elif kind == "migrate":
            row.update(event="reuseport_migrate_sock", sk2=draw(st.sampled_from([6, 7])),
                       hash=draw(st.integers(0, 2**32 - 1)), observed=draw(st.sampled_from([-1, *SOCKS])))
        elif kind == "sysctl":
            row = {"host": host, "event": "sysctl", "name": "net.ipv4.tcp_migrate_req",
                   "value": draw(st.sampled_from([0, 1]))}
        else:
            row.update(event="reuseport_has_conns_set")
        rows.append(row)
        rows.extend(_selections(draw, draw(st.integers(0, 6)), host))
    return rows


def _story_trace(tmp_path, stories):
    rows = []
    for n, story in enumerate(stories):
        for seq, row in enumerate(story, start=1):
            rows.append({**row, "host": f"h{n}", "seq": seq})
    return write_trace(tmp_path / "story.parquet", rows, {"tracekit.kernel": "6.18.0"},
                       source="test")


def _replay(path, monkeypatch, bulk: bool):
    monkeypatch.setattr(engine, "BULK", bulk)
    result = replay(path, results=True)
    return result, result.membership.table()


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(stories=st.lists(kernel_story(), min_size=1, max_size=2), walk=st.sampled_from([3, 8, 1000]))
def test_generated_kernel_stories_replay_alike_in_bulk_and_row_by_row(tmp_path, monkeypatch,
                                                                       stories, walk):
    path = _story_trace(tmp_path, stories)
    monkeypatch.setattr(engine, "WALK_ROWS", walk)
    bulk, bulk_timeline = _replay(path, monkeypatch, True)
    faithful, faithful_timeline = _replay(path, monkeypatch, False)
    assert bulk.decisions.equals(faithful.decisions)
    assert json.dumps(bulk.summary, sort_keys=True) == json.dumps(faithful.summary, sort_keys=True)
    assert bulk_timeline.equals(faithful_timeline)


def test_a_walk_of_special_rows_only_forgets_the_snapshots_it_may_have_made_stale(tmp_path,
                                                                                  monkeypatch):
    """Walked three rows at a time: sk 1 leaves the group in a walk without a selection, which
    renames the group (sk 1's bind named it); the snapshot taken before under the old name
    must not serve sk 2's selection after (its history mark, kept per name, does not see it)."""
    bind = {"proto": "tcp", "laddr": "127.0.0.1", "lport": 80}
    rows = [{"event": "reuseport_alloc", "sk": 1, "value": 0, **bind},
            {"event": "reuseport_add_sock", "sk": 1, "sk2": 2, "value": 0, **bind},
            {"event": "reuseport_select_sock", "sk": 1, "hash": 0, "observed": 2},
            {"event": "reuseport_detach_sock", "sk": 1},  # a walk of special rows only
            {"event": "reuseport_alloc", "sk": 1, "value": 0},
            {"event": "reuseport_alloc", "sk": 1, "value": 0},
            {"event": "reuseport_select_sock", "sk": 2, "hash": 0, "observed": 2}]
    path = write_trace(tmp_path / "renamed.parquet",
                       [{"host": "h1", "seq": seq, **row} for seq, row in enumerate(rows, 1)],
                       {"tracekit.kernel": "6.18.0"}, source="test")
    monkeypatch.setattr(engine, "WALK_ROWS", 3)
    bulk, _ = _replay(path, monkeypatch, True)
    faithful, _ = _replay(path, monkeypatch, False)
    assert faithful.decisions.group.tolist() == ["tcp 127.0.0.1:80", "group 1"]
    assert bulk.decisions.equals(faithful.decisions)


@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(stories=st.lists(kernel_story(), min_size=1, max_size=2), walk_rows=st.sampled_from([3, 1000]))
def test_every_snapshot_a_walk_reads_is_the_group_as_it_is_then(tmp_path, monkeypatch, stories,
                                                                walk_rows):
    """The snapshots kept between special rows, and those restated after a member's state
    changed (`Snapshot.restated`), against one made afresh (`Engine.snapshot`) each time a walk
    reads one."""
    path = _story_trace(tmp_path, stories)
    monkeypatch.setattr(engine, "WALK_ROWS", walk_rows)
    read = walk.Walk._snapshot
    checked = []

    def checking(self, sk_id):
        snap = read(self, sk_id)
        s = self.hs.host.socks[sk_id]
        fresh = self.engine.snapshot(self.hs, s, s.sk.sk_reuseport_cb)
        assert (snap.reuse, snap.state, snap.label, snap.history, snap.mark, snap.forced) == \
            (fresh.reuse, fresh.state, fresh.label, fresh.history, fresh.mark, fresh.forced)
        checked.append(snap)
        return snap

    monkeypatch.setattr(walk.Walk, "_snapshot", checking)
    replay(path, results=True)


def test_a_socket_in_its_group_twice_is_picked_at_the_slot_the_scan_reaches(tmp_path, monkeypatch):
    """sk 1 added to its own group sits in slots 0 and 1 ([1, 1, 2]); a hash whose start is slot 1
    picks it there: reason `hash`, slot 1, both ways (not `established-skip` from slot 0)."""
    bind = {"proto": "udp", "laddr": "127.0.0.1", "lport": 80}
    start_at_1 = 2**32 // 3 + 1  # reciprocal_scale(hash, 3) == 1
    rows = [{"event": "reuseport_alloc", "sk": 1, "value": 0, **bind},
            {"event": "reuseport_add_sock", "sk": 1, "sk2": 1, "value": 0, "ret": 0, **bind},
            {"event": "reuseport_add_sock", "sk": 2, "sk2": 1, "value": 0, "ret": 0, **bind},
            {"event": "reuseport_select_sock", "sk": 2, "hash": start_at_1, "observed": 1},
            {"event": "reuseport_select_sock", "sk": 2, "hash": 0, "observed": 1}]
    path = _story_trace(tmp_path, [[{**row, "host": "h0"} for row in rows]])
    bulk, _ = _replay(path, monkeypatch, True)
    faithful, _ = _replay(path, monkeypatch, False)
    assert bulk.decisions.equals(faithful.decisions)
    picks = faithful.decisions[faithful.decisions.event == "reuseport_select_sock"]
    assert picks.reason.tolist() == ["hash", "hash"] and set(faithful.decisions.verdict) == {"match"}
