"""Pairing on real recordings (spec "Pairing"): one UDP flow that a classic BPF program splits over
two sockets, read back socket by socket (not in arrival order), replays with every decision
matched; moving one datagram to the other socket is exactly one mismatch. With and without the
`payload` the recorder keeps on `recv` (which names the datagram exactly)."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pytest

from tracekit.replay import replay
from tracekit.trace import read_metadata, write_trace
from tracekit.trace.read import read_trace

SCENARIO = "story-one-flow-two-sockets"
FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "recorded" / f"{SCENARIO}.parquet"


@pytest.fixture(scope="module", params=["fixture", pytest.param("fresh", marks=pytest.mark.kernel)])
def recording(request, tmp_path_factory) -> Path:
    """The committed recording, and (marked `kernel`) one made now on this machine's kernel."""
    if request.param == "fixture":
        return FIXTURE
    if os.geteuid() != 0:
        pytest.skip("recording needs root (network namespaces, BPF)")
    from tracekit.recorder.api import record

    try:
        return record(SCENARIO, output=tmp_path_factory.mktemp("rec") / "fresh.parquet", strict=True)
    except PermissionError as err:  # pragma: no cover - depends on the machine
        pytest.skip(f"the recorder cannot run here: {err}")


def _rewrite(path: Path, out: Path, *, payloads: bool, move: int | None = None):
    """The trace without `recv` payloads (unless `payloads`), the `move`-th recv moved to the
    other socket; returns the path and the moved row's seq."""
    table = read_trace(path)
    recvs = table.index[table["event"] == "recv"].tolist()
    if not payloads:
        table.loc[recvs, "payload"] = None
    seq = None
    if move is not None:
        row = recvs[move]
        socks = sorted(set(table.loc[recvs, "sk"].astype(int)))
        table.at[row, "sk"] = next(s for s in socks if s != int(table.at[row, "sk"]))
        seq = int(table.at[row, "seq"])
    written = write_trace(out, pa.Table.from_pandas(table, preserve_index=False),
                          read_metadata(path), source="test")
    return written, seq


def test_recording_reads_sockets_out_of_arrival_order(recording):
    table = read_trace(recording)
    datagrams = table[table["event"] == "datagram"]
    recvs = table[table["event"] == "recv"]
    assert len(set(zip(datagrams["rport"], datagrams["raddr"]))) == 1, "one flow"
    assert recvs["sk"].is_monotonic_increasing and recvs["sk"].nunique() == 2
    arrival_order = [bytes(p) for p in datagrams["payload"]]
    assert [bytes(p) for p in recvs["payload"]] != arrival_order


@pytest.mark.parametrize("payloads", [True, False], ids=["recv-payload", "no-recv-payload"])
def test_socket_order_replays_without_mismatch(recording, tmp_path, payloads):
    path, _ = _rewrite(recording, tmp_path / "t.parquet", payloads=payloads)
    s = replay(path).summary
    assert (s["matched"], s["mismatched"], s["unknown"]) == (6, 0, 0), s["mismatches"]


@pytest.mark.parametrize("payloads", [True, False], ids=["recv-payload", "no-recv-payload"])
@pytest.mark.parametrize("move", range(6))
def test_one_moved_datagram_is_one_mismatch(recording, tmp_path, payloads, move):
    path, seq = _rewrite(recording, tmp_path / "t.parquet", payloads=payloads, move=move)
    r = replay(path)
    s = r.summary
    assert (s["matched"], s["mismatched"], s["unknown"]) == (5, 1, 0), s["mismatches"]
    (m,) = s["mismatches"]
    assert m["event"] == "recv" and m["expected"] != m["observed"]
    if payloads:  # the payload names the datagram: the mismatch is the moved recv itself
        assert m["seq"] == seq
