"""`tracekit export --perfetto`: the file parses with Perfetto's own protobuf schema and follows
trace processor's rules for track events (`perfetto_check`); its tracks, slices and instants say
what the recording and its replay say."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("perfetto", reason="the perfetto package (pip install '.[test]') is needed "
                    "to decode the output with Perfetto's schema")

import tracekit  # noqa: E402
from tracekit.report.perfetto import (  # noqa: E402
    INSTANT,
    NS_PER_SEQ,
    _bytes,
    _event,
    _match_run,
    _str,
    _uint,
    export_perfetto,
)
from tracekit.trace import read_trace  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from perfetto_check import check_trace, load_with_trace_processor, trace_processor_binary  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
ROLLING = REPO / "fixtures" / "recorded" / "story-rolling-restart-migrate.parquet"
MISROUTED = REPO / "reports" / "misrouted" / "trace.parquet"
GROUP = ("host netns0", "tcp 127.0.0.1:9000")


@pytest.fixture(scope="module")
def rolling(tmp_path_factory):
    out = tmp_path_factory.mktemp("perfetto") / "rolling.pftrace"
    done = export_perfetto(ROLLING, out)
    return done, check_trace(out)


def test_a_track_per_socket_under_its_group(rolling):
    done, checked = rolling
    assert (done.hosts, done.groups, done.sockets) == (1, 1, 6)
    for sk in range(6):
        checked.uuid(*GROUP, f"sk {sk}")  # raises if missing
    assert done.packets == sum(len(v) for v in checked.instants.values()) + \
        2 * sum(len(v) for v in checked.slices.values()) + len(checked.tracks)


def test_slot_slices_follow_the_recorded_restart(rolling):
    _, checked = rolling
    end = 84 * NS_PER_SEQ  # the trace's last seq is 83

    def slices(sk):
        return checked.slices[checked.uuid(*GROUP, f"sk {sk}")]

    us = NS_PER_SEQ
    assert slices(0) == [("slot 0", 4 * us, 25 * us), ("closed section", 25 * us, 25 * us)]
    assert slices(3) == [("slot 3", 24 * us, 25 * us), ("slot 0", 25 * us, end)]
    assert slices(4) == [("slot 3", 33 * us, 34 * us), ("slot 1", 34 * us, end)]
    assert slices(5) == [("slot 3", 42 * us, 43 * us), ("slot 2", 43 * us, end)]


def test_decisions_are_instants_on_the_socket_the_kernel_chose(rolling):
    _, checked = rolling
    trace = read_trace(ROLLING)
    for sk in (3, 4, 5):
        accepts = [ts // NS_PER_SEQ for name, ts, cats, _ in
                   checked.instants[checked.uuid(*GROUP, f"sk {sk}")]
                   if name == "accept" and cats == ("match",)]
        recorded = trace.loc[(trace["event"] == "accept") & (trace["sk"] == sk), "seq"].tolist()
        assert accepts == recorded
    closes = [ts for name, ts, *_ in checked.instants[checked.uuid(*GROUP, "sk 0")] if name == "close"]
    assert closes == [25 * NS_PER_SEQ]


def test_migrations_are_flows_to_the_new_listener(rolling):
    done, checked = rolling
    assert done.migrations == checked.flows == 12
    starts = [name for name, *_ in checked.instants[checked.uuid(*GROUP, "sk 1")]
              if name.startswith("migrate")]
    assert starts == ["migrate -> sk 4"] * 4


def test_a_mismatch_is_flagged_on_its_group_with_its_explanation(tmp_path):
    done = export_perfetto(MISROUTED, tmp_path / "m.pftrace")
    checked = check_trace(tmp_path / "m.pftrace")
    assert done.mismatches == 1
    flagged = [i for i in checked.instants[checked.uuid(*GROUP)] if i[2] == ("mismatch",)]
    assert len(flagged) == 1
    name, ts, _, args = flagged[0]
    assert name == "MISMATCH expected sk 5, observed sk 3" and ts == 83 * NS_PER_SEQ
    assert args["expected"] == 5 and args["observed"] == 3
    assert "reciprocal_scale" in args["explanation"]


def test_same_trace_same_bytes(tmp_path):
    a, b = tmp_path / "a.pftrace", tmp_path / "b.pftrace"
    export_perfetto(MISROUTED, a)
    export_perfetto(MISROUTED, b)
    assert a.read_bytes() == b.read_bytes()


def test_bulk_encoding_equals_one_by_one():
    """The NumPy encoding of a run of matches is byte for byte the one-packet-at-a-time one,
    across every varint width of the timestamp."""
    rng = np.random.default_rng(3)
    bodies = [_bytes(11, _uint(9, INSTANT) + _uint(11, t) + _str(23, name) + _str(22, "match"))
              for t, name in [(1, "accept"), (300, "reuseport_select_sock"), (70000, "recv")]]
    ts = np.sort(np.concatenate([rng.integers(0, 1 << 40, 500), [0, 127, 128, 16383, 16384,
                                                                  (1 << 62) + 5]]))
    ids = rng.integers(0, len(bodies), len(ts))
    one_by_one = b"".join(_event(int(t), int(track), INSTANT, name, ("match",))
                          for t, (track, name) in zip(ts.tolist(),
                                                      ([(1, "accept"), (300, "reuseport_select_sock"),
                                                        (70000, "recv")][i] for i in ids.tolist())))
    assert _match_run(ts, ids, bodies) == one_by_one


def test_cli(tmp_path):
    out = tmp_path / "r.pftrace"
    run = subprocess.run([sys.executable, "-m", "tracekit", "export", str(ROLLING), "--perfetto",
                          str(out)], capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 0, run.stderr
    assert "6 socket tracks" in run.stderr and out.stat().st_size > 0
    bad = subprocess.run([sys.executable, "-m", "tracekit", "export", str(tmp_path / "none"),
                          "--perfetto", str(tmp_path / "x.pftrace")], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.startswith("tracekit: ")
    assert not (tmp_path / "x.pftrace").exists()


@pytest.mark.slow
def test_a_million_events(tmp_path):
    """A 1M-event simulated trace: one track per socket of the trace, every decision an instant,
    and the file is small enough to scroll in the UI."""
    trace = tmp_path / "s.parquet"
    tracekit.simulate("steady", events=1_000_000, seed=1, output=trace)
    out = tmp_path / "s.pftrace"
    done = export_perfetto(trace, out)
    checked = check_trace(out)
    frame = read_trace(trace)
    sockets = set(frame["sk"].dropna().astype(int)) | set(frame["sk2"].dropna().astype(int)) | \
        set(frame.loc[frame["observed"] >= 0, "observed"].dropna().astype(int))
    names = sorted(name for name, _ in checked.tracks.values() if name.startswith("sk "))
    assert names == sorted(f"sk {sk}" for sk in sockets)
    instants = sum(len(v) for v in checked.instants.values())
    # a selection with an observed socket, and each group call with an observed return value
    decisions = int(((frame["event"] == "reuseport_select_sock") & frame["observed"].notna()).sum()
                    + (frame["event"].isin(["reuseport_alloc", "reuseport_add_sock"])
                       & frame["ret"].notna()).sum())
    assert done.decisions == decisions and instants >= decisions
    assert out.stat().st_size < 80 * 2**20
    binary = trace_processor_binary()
    if binary is None:
        pytest.skip("checked against Perfetto's schema only: trace_processor_shell is not "
                    "installed and cannot be downloaded here (set TRACE_PROCESSOR_SHELL)")
    loaded = load_with_trace_processor(out, binary)
    assert loaded["tracks"] >= len(checked.tracks)
