"""`Replay.timeline()`: each group's membership over seq, checked against what the kernel recorded
and against the model's own final groups."""

from __future__ import annotations

from pathlib import Path

import pytest

import tracekit
from tracekit.replay.timeline import COLUMNS, Membership, membership_at, slots
from tracekit.trace import read_trace

REPO = Path(__file__).resolve().parents[2]
RECORDED = REPO / "fixtures" / "recorded"
ROLLING = RECORDED / "story-rolling-restart-migrate.parquet"
GROUP = "tcp 127.0.0.1:9000"


@pytest.fixture(scope="module")
def rolling():
    return tracekit.replay(ROLLING)


def test_columns(rolling):
    frame = rolling.timeline()
    assert tuple(frame.columns) == COLUMNS
    assert set(frame["group"]) == {GROUP}


def test_every_listen_and_close_of_the_recording_is_a_change(rolling):
    trace = read_trace(ROLLING)
    frame = rolling.timeline()
    listens = trace.loc[trace["event"] == "listen", ["seq", "sk"]].astype(int)
    closes = trace.loc[trace["event"] == "close", ["seq", "sk"]].astype(int)
    joined = frame.loc[frame["change"] == "joined", ["seq", "sk"]].astype(int)
    left = frame.loc[frame["change"] == "left", ["seq", "sk"]].astype(int)
    assert joined.values.tolist() == listens.values.tolist()
    assert left.values.tolist() == closes.values.tolist()
    # with tcp_migrate_req=1 each closing listener passes through the closed section first
    closed = frame.loc[frame["change"] == "closed", ["seq", "sk"]].astype(int)
    assert closed.values.tolist() == closes.values.tolist()


def test_migrations_went_where_the_kernel_accepted_them(rolling):
    """Each migrated connection's target is the listener that accept()ed that flow in the
    recording: the kernel, not the model, decides whether this passes."""
    trace = read_trace(ROLLING)
    accepts = trace.loc[trace["event"] == "accept"]
    accepted_by = {f"{r.raddr}:{int(r.rport)} -> {r.laddr}:{int(r.lport)}": int(r.sk)
                   for r in accepts.itertuples()}
    migrated = rolling.timeline().query("change == 'migrated'")
    assert len(migrated) == 12  # tracekit.mib.TCPMigrateReqSuccess of the recording
    assert int(read_trace_metadata()["tracekit.mib.TCPMigrateReqSuccess"]) == 12
    for row in migrated.itertuples():
        assert accepted_by[row.flow] == int(row.to_sk), row


def read_trace_metadata():
    from tracekit.trace import read_metadata

    return read_metadata(ROLLING)


def test_slot_moves_of_the_rolling_restart(rolling):
    """The last listener moves into the hole the closing one leaves (`__reuseport_detach_sock`
    and `reuseport_stop_listen_sock` copy `socks[num_socks - 1]` into its slot)."""
    states = slots(rolling.timeline(), GROUP)
    assert [(m.seq, m.live) for m in states] == [
        (4, (0,)), (8, (0, 1)), (12, (0, 1, 2)), (24, (0, 1, 2, 3)), (25, (3, 1, 2)),
        (33, (3, 1, 2, 4)), (34, (3, 4, 2)), (42, (3, 4, 2, 5)), (43, (3, 4, 5)),
    ]
    assert membership_at(rolling.timeline(), GROUP, 30) == Membership(30, (3, 1, 2), ())
    assert membership_at(rolling.timeline(), GROUP, 0) == Membership(0, (), ())
    final = rolling.groups[0]
    assert list(states[-1].live) == final["socks"] and list(states[-1].closed) == final["closed"]


def test_shutdown_keeps_a_listener_in_the_closed_section(tmp_path, builder):
    """A kernel-layer trace: stop_listen puts a socket in the closed section, where it stays
    until it is detached; the timeline shows it there between the two."""
    rows = [
        {"event": "reuseport_alloc", "sk": 1, "value": 0, "proto": "tcp"},
        {"event": "reuseport_add_sock", "sk": 2, "sk2": 1, "value": 0, "proto": "tcp"},
        {"event": "reuseport_add_sock", "sk": 3, "sk2": 1, "value": 0, "proto": "tcp"},
        {"event": "sysctl", "name": "net.ipv4.tcp_migrate_req", "value": 1},
        {"event": "reuseport_stop_listen_sock", "sk": 1, "proto": "tcp"},
        {"event": "reuseport_select_sock", "sk": 2, "hash": 7, "observed": 3},
        {"event": "reuseport_detach_sock", "sk": 1},
    ]
    from tracekit.trace import write_trace

    path = write_trace(tmp_path / "k.parquet",
                       [{"host": "h", "seq": i, **r} for i, r in enumerate(rows)], {}, source="test")
    r = tracekit.replay(path)
    frame = r.timeline()
    changes = frame[["seq", "sk", "change", "from_slot", "to_slot"]].astype(object).where(
        frame[["seq", "sk", "change", "from_slot", "to_slot"]].notna(), None).values.tolist()
    assert changes == [
        [0, 1, "joined", None, 0], [1, 2, "joined", None, 1], [2, 3, "joined", None, 2],
        [4, 3, "moved", 2, 0], [4, 1, "closed", 0, None], [6, 1, "left", None, None],
    ]
    group = frame["group"].iloc[0]
    assert membership_at(frame, group, 5) == Membership(5, (3, 2), (1,))
    assert membership_at(frame, group, 6) == Membership(6, (3, 2), ())


@pytest.mark.slow
def test_rebuilt_membership_equals_the_models_groups(tmp_path):
    """On a simulated mutation-heavy trace (a change every 100 events, closes with queued
    connections), the membership rebuilt from the timeline's rows ends where the model ends."""
    path = tmp_path / "m.parquet"
    tracekit.simulate("mutation-heavy", events=30_000, seed=5, output=path, hosts=2)
    r = tracekit.replay(path)
    frame = r.timeline()
    assert len(frame) > 300
    assert set(frame["change"]) >= {"joined", "moved", "closed", "left", "migrated"}
    for group in r.groups:
        states = slots(frame, group["group"], host=group["host"])
        assert states, group["group"]
        assert list(states[-1].live) == group["socks"], group["group"]
        assert list(states[-1].closed) == group["closed"], group["group"]


@pytest.mark.parametrize("made", [False, True], ids=["from-the-log", "from-made-rows"])
def test_rows_of_some_groups_are_the_full_timelines_rows_of_them(made):
    """`timeline_frame(..., only=keys)` (what the reports read for the groups they detail) is
    the full timeline filtered to those groups, in the same order, whether the rows come from
    the log (a replay in this process) or were made already (a Dask task's part)."""
    from tracekit.replay.timeline import Timeline, timeline_frame

    replay = tracekit.replay(RECORDED / "random-11-60.parquet")
    full = replay.timeline()
    pairs = sorted(set(zip(full["host"], full["group"])))
    assert len(pairs) >= 3
    keys = pairs[::2] + [("no-such-host", GROUP)]
    membership = tracekit.replay(RECORDED / "random-11-60.parquet").membership  # rows not made
    if made:
        membership = Timeline.merged([membership.made()])
    some = timeline_frame(membership, only=keys)
    if not made:
        assert membership._done == 0  # the other groups' rows were not made for it
    wanted = full[[(h, g) in set(keys) for h, g in zip(full["host"], full["group"])]]
    assert 0 < len(some) < len(full)
    assert some.equals(wanted.reset_index(drop=True))
    assert timeline_frame(membership).equals(full)  # the whole is still all there
