from __future__ import annotations

import pandas as pd
import pytest

from tracekit.report.view import (
    ReportView,
    describe_decision,
    format_endpoint,
    format_flow,
    format_sk,
    ordered_load,
    view_of,
)


def test_view_of_accepts_a_replay_a_view_and_a_summary(replay, summary):
    assert view_of(replay).decisions is replay.decisions
    assert view_of(summary).decisions is None
    view = ReportView(summary)
    assert view_of(view) is view


def test_view_of_refuses_an_object_without_a_summary():
    with pytest.raises(TypeError, match="no summary"):
        view_of(object())


def test_mismatches_from_the_table_are_plain_python_values(replay, decisions):
    records = view_of(replay).mismatches()
    expected = [d for d in decisions if d["verdict"] == "mismatch"]
    assert [(r["host"], r["seq"]) for r in records] == [(d["host"], d["seq"]) for d in expected]
    for record in records:
        assert all(type(record[k]) is int for k in ("seq", "expected", "observed", "lport"))
    # a reset has no socket: the missing cell is None, not NaN
    reset = next(r for r in records if r["event"] == "reset")
    assert reset["sk"] is None


def test_mismatches_come_in_host_seq_order_whatever_the_table_order(replay):
    shuffled = replay.decisions.sample(frac=1, random_state=3)
    view = ReportView(replay.summary, shuffled)
    assert view.mismatches() == view_of(replay).mismatches()


def test_mismatches_without_the_table_are_the_summarys(summary):
    view = view_of(summary)
    assert view.mismatches() == summary["mismatches"]
    assert view.mismatches(1) == summary["mismatches"][:1]


def test_group_records_filter_by_host_group_and_verdict(replay, decisions):
    view = view_of(replay)
    for host, group in {(d["host"], d["group"]) for d in decisions}:
        for verdict in ("match", "mismatch", "unknown"):
            got = view.group_records(host, group, verdict)
            want = [d for d in decisions if (d["host"], d["group"], d["verdict"]) == (host, group, verdict)]
            assert [r["seq"] for r in got] == [d["seq"] for d in want]


def test_group_records_without_the_table_know_only_mismatches(summary):
    view = view_of(summary)
    first = summary["mismatches"][0]
    assert view.group_records(first["host"], first["group"], "unknown") is None
    assert first in view.group_records(first["host"], first["group"], "mismatch")


@pytest.mark.parametrize(("sk", "text"), [(7, "sk 7"), (0, "sk 0"), (-1, "none"), (None, "?")])
def test_format_sk(sk, text):
    assert format_sk(sk) == text


def test_format_endpoint_brackets_ipv6():
    assert format_endpoint("::1", 53) == "[::1]:53"
    assert format_endpoint("127.0.0.1", 80) == "127.0.0.1:80"
    assert format_endpoint(None, None) == "?"


def test_format_flow_goes_from_remote_to_local():
    record = {"laddr": "127.0.0.1", "lport": 8080, "raddr": "10.0.0.2", "rport": 40000}
    assert format_flow(record) == "10.0.0.2:40000 -> 127.0.0.1:8080"
    assert format_flow({"laddr": None}) == ""


def test_describe_decision_without_a_flow_names_host_seq_and_event():
    record = {"host": "h1", "seq": 9, "event": "reuseport_select_sock", "expected": 2, "observed": -1}
    assert describe_decision(record) == "h1 seq 9 reuseport_select_sock: expected sk 2, observed none"


def test_ordered_load_follows_the_array_then_closed_then_departed_sockets():
    group = {"socks": [9, 2], "closed": [5], "load": {"2": 4, "5": 1, "30": 2, "4": 7}}
    assert ordered_load(group) == [(9, 0, "live"), (2, 4, "live"), (5, 1, "closed"),
                                   (4, 7, "gone"), (30, 2, "gone")]


def test_numpy_and_missing_cells_become_plain(replay):
    table = pd.DataFrame({"host": ["h"], "seq": [1], "verdict": ["mismatch"], "sk": [pd.NA],
                          "expected": pd.array([3], dtype="Int64"), "observed": [float("nan")]})
    (record,) = ReportView({}, table).mismatches()
    assert record == {"host": "h", "seq": 1, "verdict": "mismatch", "sk": None, "expected": 3,
                      "observed": None}


def test_complete_only_when_the_table_holds_every_decision(replay, summary):
    assert view_of(replay).complete
    partial = ReportView(replay.summary, replay.decisions[replay.decisions["verdict"] != "match"])
    assert not partial.complete and not view_of(summary).complete
    some = replay.decisions.iloc[0]
    assert partial.group_records(some["host"], some["group"], "match") is None
    assert partial.group_records(some["host"], some["group"], "mismatch") == \
        view_of(replay).group_records(some["host"], some["group"], "mismatch")
