"""Classic BPF programs that read the network and link-layer headers (SKF_NET_OFF, SKF_LL_OFF), on
a real recording: `story-cbpf-source-port` steers UDP by the source port (IPv4 and IPv6) and by
the IP version and length. Every decision is predicted; a program reading a field the trace
cannot know (the TTL) leaves exactly its group's decisions unknown, naming the field."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from tracekit.kernel.cbpf import (
    BPF_A, BPF_ABS, BPF_B, BPF_LD, BPF_RET, SKF_NET_OFF, encode_sock_filter,
)
from tracekit.replay import replay
from tracekit.trace import read_metadata, write_trace
from tracekit.trace.read import read_trace

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "recorded" / "story-cbpf-source-port.parquet"


def _tampered(tmp_path, change) -> Path:
    table = read_trace(FIXTURE)
    change(table)
    return write_trace(tmp_path / "t.parquet", pa.Table.from_pandas(table, preserve_index=False),
                       read_metadata(FIXTURE), source="test")


def test_steering_by_header_fields_is_predicted():
    s = replay(FIXTURE).summary
    assert (s["matched"], s["mismatched"], s["unknown"]) == (24, 0, 0), s["mismatches"]
    assert {g["prog"] for g in s["groups"]} == {"cbpf"}


def test_a_datagram_moved_to_another_socket_is_one_mismatch(tmp_path):
    def move(table):
        row = table.index[table["event"] == "recv"][5]
        table.at[row, "sk"] = next(sk for sk in table["sk"].dropna().astype(int).unique()
                                   if sk != table.at[row, "sk"])

    r = replay(_tampered(tmp_path, move))
    s = r.summary
    assert (s["matched"], s["mismatched"], s["unknown"]) == (23, 1, 0)
    assert "expected sk" in s["mismatches"][0]["explanation"]


def test_a_field_the_trace_cannot_know_leaves_its_decisions_unknown(tmp_path):
    ttl = encode_sock_filter([(BPF_LD | BPF_B | BPF_ABS, 0, 0, (SKF_NET_OFF + 8) & 0xFFFFFFFF),
                              (BPF_RET | BPF_A, 0, 0, 0)])

    def read_ttl(table):
        first = table.index[(table["event"] == "setsockopt")
                            & (table["name"] == "SO_ATTACH_REUSEPORT_CBPF")][0]
        table.at[first, "prog"] = ttl

    r = replay(_tampered(tmp_path, read_ttl), results=True)
    s = r.summary
    assert (s["matched"], s["mismatched"], s["unknown"]) == (16, 0, 8)
    unknown = r.decisions[r.decisions["verdict"] == "unknown"]
    assert set(unknown["lport"]) == {9006} and set(unknown["laddr"]) == {"127.0.0.1"}
    assert s["unknown_reasons"] == {"cbpf-unknown": 8}
    explained = replay(_tampered(tmp_path, read_ttl), explain_all=True, results=True).decisions
    texts = explained[explained["verdict"] == "unknown"]["explanation"]
    assert texts.str.contains("depends on the IPv4 TTL").all()
