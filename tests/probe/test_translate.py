"""bpftrace lines -> records -> kernel-layer rows -> replay, without a kernel.

The lines are what `tracekit.probe.script` makes bpftrace print (field order from `FIELDS`); the
probe's own run against real kernels is in test_probe_vm.py.
"""

from __future__ import annotations

import socket
import struct

import pytest

from tracekit.probe.lines import Assembler, Attached, Lost, ProbeOutputError, parse_line
from tracekit.probe.script import FIELDS, bpftrace_program
from tracekit.probe.translate import MIGRATE_REQ, Translator
from tracekit.replay import replay
from tracekit.trace import read_metadata, write_trace

NET = 4026531840
COOKIE = 1
SK = {name: 0xFFFF888000000000 + 0x1000 * i for i, name in enumerate("abcdefgh", 1)}


def le32(ip: str) -> int:
    return struct.unpack("<I", socket.inet_aton(ip))[0]


def be16(port: int) -> int:
    return struct.unpack("<H", struct.pack(">H", port))[0]


def line(code: str, ts: int, cpu: int = 0, **values: int) -> str:
    fields = FIELDS[code]
    missing = [name for name in fields if name not in values and name != "name"]
    values = {**{name: 0 for name in missing}, "cookie": COOKIE, **values}
    words = [str(values[name]) for name in fields if name != "name"]
    if "name" in fields:
        words.append(str(values.get("name", "")))
    return " ".join(["TK", code, str(ts), str(cpu), *words]) + "\n"


def sock(sk: str, port: int = 8080, ip: str = "127.0.0.1", proto: int = 6) -> dict[str, int]:
    return {"sk": SK[sk], "net": NET, "proto": proto, "family": 2, "lport": port,
            "icpu": 0xFFFFFFFF, "v4": le32(ip)}


def select(sk: str, hash: int, chosen: str | None, *, rport: int = 40000) -> dict[str, int]:
    return {"net": NET, "sk": SK[sk], "hash": hash, "ret": SK[chosen] if chosen else 0,
            "ffam": 4, "l0": le32("127.0.0.1"), "lport": be16(8080), "r0": le32("127.0.0.2"),
            "rport": be16(rport)}


def rows_of(lines: list[str], translator: Translator | None = None) -> list[dict]:
    translator = translator or Translator(node="n")
    assembler, rows = Assembler(), []
    for text in lines:
        item = parse_line(text)
        if isinstance(item, Lost):
            translator.ids.forget_all()
            continue
        if item is None or isinstance(item, Attached) or item.code == "B":
            continue
        for record in assembler.feed(item):
            rows += translator.rows(record)
    for record in assembler.flush():
        rows += translator.rows(record)
    return rows


def scale(h: int, n: int) -> int:
    return (h * n) >> 32


def group_of_three() -> list[str]:
    return [line("A", 1, **sock("a"), inany=0, ret=0),
            line("D", 2, **sock("b"), sk2=SK["a"], inany=0, ret=0),
            line("D", 3, **sock("c"), sk2=SK["a"], inany=0, ret=0)]


def test_the_program_prints_what_the_parser_reads():
    program = bpftrace_program()
    for code in FIELDS:
        assert f'"TK {code} ' in program
    assert "kretprobe:reuseport_select_sock" in program and "tracepoint:sock:inet_sock_set_state" in program


def test_records_become_the_simulators_vocabulary():
    h = 0x9000_0000  # reciprocal_scale(h, 3) = 1: sk b
    rows = rows_of(group_of_three() + [line("S", 4, 1, **select("a", h, "b"))])
    assert [r["event"] for r in rows] == ["reuseport_alloc", "reuseport_add_sock",
                                         "reuseport_add_sock", "reuseport_select_sock"]
    alloc, _, _, sel = rows
    assert alloc | {"host": "n/netns:4026531840"} == alloc
    assert (alloc["sk"], alloc["proto"], alloc["family"], alloc["laddr"], alloc["lport"]) == \
        (1, "tcp", 4, "127.0.0.1", 8080)
    assert (sel["sk"], sel["hash"], sel["cpu"], sel["observed"]) == (1, h, 1, 2)
    assert (sel["laddr"], sel["lport"], sel["raddr"], sel["rport"]) == \
        ("127.0.0.1", 8080, "127.0.0.2", 40000)
    assert [r["seq"] for r in rows] == [0, 1, 2, 3]


def test_negative_returns_and_a_released_address_gets_a_new_id():
    rows = rows_of([line("A", 1, **sock("a"), inany=1, ret=(1 << 64) - 16),
                    line("X", 2, net=NET, sk=SK["a"]),
                    line("M", 3, net=NET, sk=SK["a"], sk2=SK["h"], ret=0),  # its queue, after
                    line("A", 4, **sock("a"), inany=0, ret=0)])
    assert rows[0]["ret"] == -16 and rows[0]["value"] == 1
    assert [r["sk"] for r in rows if r["event"] != "sysctl"] == [1, 1, 1, 3]


def test_a_namespace_is_told_apart_by_its_cookie_not_its_inode():
    rows = rows_of([line("A", 1, **sock("a"), inany=0, ret=0),
                    line("A", 2, **sock("b"), cookie=2, inany=0, ret=0)])
    assert [r["host"] for r in rows] == ["n/netns:4026531840", "n/netns:4026531840.2"]


def test_ipv6_addresses():
    v6 = struct.unpack("<4I", socket.inet_pton(socket.AF_INET6, "fe80::1:2"))
    rows = rows_of([line("A", 1, **{**sock("a"), "family": 10, "a0": v6[0], "a1": v6[1],
                                    "a2": v6[2], "a3": v6[3]}, inany=0, ret=0)])
    assert (rows[0]["family"], rows[0]["laddr"]) == (6, "fe80::1:2")


def test_migration_sysctl_is_written_when_the_kernel_reads_a_new_value():
    rows = rows_of(group_of_three() + [
        line("L", 4, net=NET, sk=SK["a"], proto=6, migrate_req=1),
        line("M", 5, net=NET, sk=SK["a"], sk2=SK["h"], hash=7, ret=SK["b"], migrate_req=1,
             ffam=2, lport=8080, rport=be16(40001)),
        line("M", 6, net=NET, sk=SK["a"], sk2=SK["h"], hash=8, ret=0, migrate_req=1),
    ])
    events = [r["event"] for r in rows[3:]]
    assert events == ["sysctl", "reuseport_stop_listen_sock", "reuseport_migrate_sock",
                      "reuseport_migrate_sock"]
    assert rows[3]["name"] == MIGRATE_REQ and rows[3]["value"] == 1
    first, second = rows[5], rows[6]
    assert first["sk2"] != second["sk2"]  # each migrating request is its own socket
    assert (first["observed"], first["lport"], first["rport"]) == (2, 8080, 40001)
    assert second["observed"] == -1


def test_payload_and_classic_program_continuations():
    prog = [0x0000000100000006]  # BPF_RET | BPF_K, k = 1
    rows = rows_of(group_of_three() + [
        line("P", 4, 0, net=NET, sk=SK["a"], ret=0, type=1, attach=0, len=1),
        line("p", 4, 0, index=0, insn=prog[0]),
        line("S", 5, 1, **select("a", 5, "b"), prog=0xFFFF1),
        line("s", 5, 1, len=3, w0=0x636261),
    ])
    attach, sel = rows[3], rows[4]
    assert attach["prog"] == struct.pack("<Q", prog[0]) and "name" not in attach
    assert sel["payload"] == b"abc"


def test_an_ebpf_program_is_named():
    rows = rows_of(group_of_three() + [
        line("P", 4, 0, net=NET, sk=SK["a"], ret=0, type=21, attach=39, len=0, name="tk_observer")])
    assert rows[3]["name"] == "tk_observer" and rows[3]["value"] == 39


def test_ports_and_netns_filters():
    t = Translator(node="n", ports=frozenset([9090]))
    assert rows_of(group_of_three(), t) == []
    t = Translator(node="n", netns=frozenset([NET + 1]))
    assert rows_of(group_of_three(), t) == []


def test_udp_connect_and_state_records():
    rows = rows_of(group_of_three() + [
        line("C", 4, net=NET, sk=SK["b"]),
        line("U", 5, net=NET, sk=SK["b"]),
        line("T", 6, net=NET, sk=SK["c"], old=10, new=7),
        line("T", 7, net=NET, sk=SK["h"], old=10, new=7),  # never joined: not written
    ])
    assert [(r["event"], r.get("value")) for r in rows[3:]] == [
        ("reuseport_has_conns_set", None), ("sk_state", 1), ("sk_state", 7), ("sk_state", 7)]


def test_bpftrace_notices_and_bad_lines():
    assert parse_line("Attaching 20 probes...\n") == Attached(20)
    assert parse_line("Lost 17 events\n") == Lost(17)
    assert parse_line("@member: 3\n") is None
    with pytest.raises(ProbeOutputError):
        parse_line("TK S 1 2 3\n")


def replayed(tmp_path, lines: list[str]):
    path = write_trace(tmp_path / "p.parquet", rows_of(lines), {"tracekit.kernel": "6.1.0-57-amd64"},
                       source="probe")
    return replay(path, results=True)


def test_a_probe_trace_replays_and_names_its_groups(tmp_path):
    picks = [(h, "abc"[scale(h, 3)]) for h in (1, 0x6000_0000, 0xF000_0000, 0x5555_5556)]
    lines = group_of_three() + [line("S", 10 + i, 0, **select("a", h, sk, rport=40000 + i))
                                for i, (h, sk) in enumerate(picks)]
    lines += [line("X", 20, net=NET, sk=SK["a"]),  # sk c moves into slot 0
              line("S", 21, 0, **select("b", 1, "c"))]
    r = replayed(tmp_path, lines)
    assert (r.summary["matched"], r.summary["mismatched"], r.summary["unknown"]) == (8, 0, 0)
    assert set(r.decisions["group"]) == {"tcp 127.0.0.1:8080"}


def test_groups_built_before_the_probe_are_unknown_never_mismatched(tmp_path):
    lines = [line("S", 1, 0, **select("a", 1, "b")),              # a's group predates the probe
             line("D", 2, **sock("c"), sk2=SK["a"], inany=0, ret=0),  # c joins it
             line("S", 3, 0, **select("c", 1, "a")),
             line("L", 4, net=NET, sk=SK["a"], proto=6, migrate_req=1),
             line("M", 5, net=NET, sk=SK["a"], sk2=SK["h"], hash=1, ret=SK["b"], migrate_req=1),
             line("A", 6, **sock("d", port=9090), inany=0, ret=0),  # a group it saw built
             line("S", 7, 0, **select("d", 1, "d"))]
    r = replayed(tmp_path, lines)
    d = r.decisions
    assert r.summary["mismatched"] == 0
    assert list(d["verdict"]) == ["unknown", "unknown", "unknown", "unknown", "match", "match"]
    assert set(d[d.verdict == "unknown"]["reason"]) == {"membership-unknown"}


def test_lost_events_make_the_groups_alive_then_unknown(tmp_path):
    lines = group_of_three() + [line("S", 4, 0, **select("a", 1, "a")), "Lost 5 events\n",
                                line("S", 6, 0, **select("a", 1, "c"))]  # would mismatch
    r = replayed(tmp_path, lines)
    assert list(r.decisions["verdict"])[-2:] == ["match", "unknown"]
    assert r.summary["mismatched"] == 0


def test_late_metadata_joins_the_file(tmp_path):
    path = write_trace(tmp_path / "m.parquet", rows_of(group_of_three()), {"a": "1"},
                       source="probe", late_metadata=lambda: {"tracekit.probe.lost_events": "3"})
    meta = read_metadata(path)
    assert (meta["a"], meta["tracekit.probe.lost_events"], meta["tracekit.source"]) == \
        ("1", "3", "probe")
