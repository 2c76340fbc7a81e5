"""Baselines end to end: a trace with 25 wrong accepts gives a baseline; 3 more fail and are named
exactly; 5 repaired pass and count as fixed. Real Parquet traces, the real replay and CLI."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import jsonschema
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from tracebuilder import TraceBuilder, slot_hash

from tracekit.cli import main
from tracekit.replay import replay
from tracekit.replay.baseline import BaselineError, parse_baseline
from tracekit.report import render_html, render_junit
from tracekit.report.json import result_schema

SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "tracekit" / "report"
                     / "baseline_schema.json").read_text())
CONNS = 40


def _trace(path: Path, wrong: set[int], shift: int = 0) -> Path:
    """Listeners sk 1, 2, 3 (slots 0, 1, 2); connection i hashes to slot i % 3 and is accepted
    by the right socket, or by the next one when i is in `wrong`. `shift` extra events first
    move every seq, as a re-recording would."""
    b = TraceBuilder()
    for k in range(shift):
        b.add("sysctl", name="net.core.somaxconn", value=4096 + k)
    b.tcp_listeners([1, 2, 3])
    for i in range(CONNS):
        b.conn(20000 + i, slot_hash(i % 3, 3, salt=i))
    for i in range(CONNS):
        right = i % 3 + 1
        b.accept(right % 3 + 1 if i in wrong else right, 20000 + i)
    return b.write(path)


def run(*args) -> object:
    return CliRunner().invoke(main, ["replay", *map(str, args)])


@pytest.fixture
def known(tmp_path) -> Path:
    trace = _trace(tmp_path / "first.parquet", set(range(25)))
    target = tmp_path / "known.json"
    result = run(trace, "--write-baseline", target)
    assert result.exit_code == 0, result.output  # writing a baseline accepts what it writes
    return target


def test_a_baseline_lists_the_25_wrong_accepts_one_per_line(known):
    text = known.read_text()
    document = json.loads(text)
    jsonschema.validate(document, SCHEMA)
    assert document["format"] == "tracekit-baseline/1"
    entries = document["divergences"]
    assert len(entries) == 25 and len(text.splitlines()) == 25 + 5
    assert sorted(e["rport"] for e in entries) == [20000 + i for i in range(25)]
    assert all(e["event"] == "accept" and e["occurrence"] == 0 and e["sk"] is None for e in entries)
    assert "seq" not in entries[0]
    assert parse_baseline(text) and len(parse_baseline(text)) == 25


def test_a_baseline_is_byte_identical_for_the_same_mismatches(tmp_path, known):
    again = tmp_path / "again.json"
    shifted = _trace(tmp_path / "shifted.parquet", set(range(25)), shift=11)
    assert run(shifted, "--write-baseline", again).exit_code == 0
    assert again.read_bytes() == known.read_bytes()  # seq moved, identities did not


def test_writing_a_baseline_still_fails_on_a_gate(tmp_path):
    trace = _trace(tmp_path / "t.parquet", {1, 2})
    result = run(trace, "--write-baseline", tmp_path / "k.json", "--fail-on", "unknown>0")
    assert result.exit_code == 0 and (tmp_path / "k.json").is_file()
    b = TraceBuilder().tcp_listeners([1, 2]).conn(30000, None).accept(1, 30000)  # no hash: unknown
    result = run(b.write(tmp_path / "u.parquet"), "--write-baseline", tmp_path / "k2.json",
                 "--fail-on", "unknown>0")
    assert result.exit_code == 1 and "tracekit: gate unknown>0 failed: 1 of 1 decisions unknown" in result.output
    assert (tmp_path / "k2.json").is_file()


def test_the_same_trace_passes_against_its_baseline(tmp_path, known):
    trace = _trace(tmp_path / "again.parquet", set(range(25)))
    r = replay(trace, baseline=known)
    assert r.summary["mismatched"] == 25
    assert {k: r.summary["baseline"][k] for k in ("known", "new", "fixed")} == \
        {"known": 25, "new": 0, "fixed": 0}
    assert r.exit_code == 0


def test_three_more_wrong_accepts_fail_and_are_named_exactly(tmp_path, known):
    trace = _trace(tmp_path / "worse.parquet", set(range(25)) | {30, 31, 32}, shift=7)
    out = tmp_path / "summary.json"
    results = tmp_path / "results.parquet"
    junit = tmp_path / "junit.xml"
    result = run(trace, "--baseline", known, "--json", out, "--results", results,
                 "--junit", junit)
    assert result.exit_code == 1, result.output
    assert "CI FAIL: 3 new mismatches (25 known, 0 fixed)" in result.output
    summary = json.loads(out.read_text())
    jsonschema.validate(summary, result_schema())
    b = summary["baseline"]
    assert (b["known"], b["new"], b["fixed"]) == (25, 3, 0)
    assert sorted(m["rport"] for m in b["new_mismatches"]) == [20030, 20031, 20032]
    # the terminal report lists the new ones first
    listed = [line for line in result.output.splitlines() if line.lstrip()[:3] in ("1. ", "2. ", "3. ", "4. ")]
    assert all("NEW" in line for line in listed[:3]) and "KNOWN" in listed[3]
    assert all(f":{p}" in result.output for p in (20030, 20031, 20032))
    # --results: a baseline column, new/known on mismatches only
    table = pq.read_table(results).to_pandas()
    new = table[table["baseline"] == "new"]
    assert sorted(new["rport"]) == [20030, 20031, 20032]
    assert (table["baseline"] == "known").sum() == 25
    assert table.loc[table["verdict"] == "match", "baseline"].isna().all()
    # JUnit fails on the 3 new ones only
    xml = junit.read_text()
    assert 'failures="1"' in xml and "3 new mismatches (25 known in the baseline)" in xml


def test_five_repaired_pass_and_count_fixed(tmp_path, known):
    trace = _trace(tmp_path / "better.parquet", set(range(5, 25)), shift=3)
    r = replay(trace, baseline=known)
    b = r.summary["baseline"]
    assert (b["known"], b["new"], b["fixed"]) == (20, 0, 5)
    assert sorted(f["rport"] for f in b["fixed_divergences"]) == [20000 + i for i in range(5)]
    assert r.exit_code == 0
    root = ET.fromstring(render_junit(r))
    assert root.get("failures") == "0"
    assert "known (baseline)" in "".join(root.itertext())
    cli = run(trace, "--baseline", known)
    assert cli.exit_code == 0
    # the verdict stays MISMATCH (20 are), the headline says what CI decides
    assert "MISMATCH" in cli.output and "CI PASS: 0 new mismatches (20 known, 5 fixed)" in cli.output
    assert "CI PASS: 0 new mismatches (20 known, 5 fixed)" in render_html(r)


def test_no_baseline_and_no_gate_adds_no_ci_headline(tmp_path):
    trace = _trace(tmp_path / "plain.parquet", {1})
    assert "CI " not in run(trace).output
    assert "CI FAIL: 1 mismatch; 1 gate passed" in run(trace, "--fail-on", "resets>0").output


def test_identity_is_the_occurrence_within_the_flow_not_seq(tmp_path):
    """Two datagrams of one UDP flow: the second one's divergence is occurrence 1."""
    b = TraceBuilder()
    for sk in (1, 2):
        b.add("socket", sk=sk, proto="udp", family=4)
        b.add("setsockopt", sk=sk, name="SO_REUSEPORT", value=1, ret=0)
        b.add("bind", sk=sk, laddr="127.0.0.1", lport=5353, ret=0)
    flow = dict(proto="udp", laddr="127.0.0.1", lport=5353, raddr="127.0.0.1", rport=4000)
    for _ in range(2):
        b.add("datagram", hash=slot_hash(0, 2), cpu=0, payload=b"", **flow)
    for _ in range(2):  # the model picks slot 0 (sk 1); the kernel is said to have picked sk 2
        b.add("recv", sk=2, **flow)
    r = replay(b.write(tmp_path / "udp.parquet"))
    from tracekit.replay.ci import baseline_text

    entries = json.loads(baseline_text(r))["divergences"]
    assert r.summary["mismatched"] == 2
    assert [(e["event"], e["rport"], e["occurrence"]) for e in entries] == \
        [("recv", 4000, 0), ("recv", 4000, 1)]


def test_a_bad_baseline_is_refused_naming_the_file_and_entry(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "tracekit-baseline/1", "divergences": [{"host": "h1"}]}')
    with pytest.raises(BaselineError, match=r"bad.json: divergence 0: 'event' must be a string"):
        parse_baseline(bad.read_text(), str(bad))
    trace = _trace(tmp_path / "t.parquet", {1})
    result = run(trace, "--baseline", bad)
    assert result.exit_code == 2 and "divergence 0" in result.output
    result = run(trace, "--baseline", tmp_path / "missing.json")
    assert result.exit_code == 2 and "missing.json" in result.output
