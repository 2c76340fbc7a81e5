"""Load and reset gates (`--fail-on`): an imbalance gate fails a group whose classic BPF program
sends most datagrams to one socket and passes plain hashing; resets and unknown shares gate too."""

from __future__ import annotations

import json
import random

import jsonschema
from hypothesis import given
from hypothesis import strategies as st
import pytest
from click.testing import CliRunner
from tracebuilder import TraceBuilder

from tracekit.cli import main
from tracekit.errors import TracekitError
from tracekit.kernel import cbpf
from tracekit.kernel.sock_reuseport import reciprocal_scale
from tracekit.replay import replay
from tracekit.replay.gates import parse_gate
from tracekit.report.json import result_schema

# ld b[0]; ret a: the socket index is the payload's first byte
FIRST_BYTE = cbpf.encode_sock_filter([(cbpf.BPF_LD | cbpf.BPF_B | cbpf.BPF_ABS, 0, 0, 0),
                                      (cbpf.BPF_RET | cbpf.BPF_A, 0, 0, 0)])
SOCKS = [1, 2, 3, 4]
N = 400


def _udp_trace(path, steered: bool):
    """Four UDP sockets; N datagrams from distinct ports, each received where the kernel would
    put it: with the program, 85% carry first byte 0 (socket 1), the rest spread; without,
    by hash."""
    rng = random.Random(7)
    b = TraceBuilder()
    for sk in SOCKS:
        b.add("socket", sk=sk, proto="udp", family=4)
        b.add("setsockopt", sk=sk, name="SO_REUSEPORT", value=1, ret=0)
        b.add("bind", sk=sk, laddr="127.0.0.1", lport=5353, ret=0)
    if steered:
        b.add("setsockopt", sk=1, name="SO_ATTACH_REUSEPORT_CBPF", prog=FIRST_BYTE, ret=0)
    for i in range(N):
        flow = dict(proto="udp", laddr="127.0.0.1", lport=5353, raddr="127.0.0.1", rport=30000 + i)
        h = rng.getrandbits(32)
        slot = (0 if rng.random() < 0.85 else rng.randrange(4)) if steered else reciprocal_scale(h, 4)
        b.add("datagram", hash=h, cpu=0, payload=bytes([slot, 0, 0, 0]), **flow)
        b.add("recv", sk=SOCKS[slot], **flow)
    return b.write(path)


def run(*args):
    return CliRunner().invoke(main, ["replay", *map(str, args)])


def test_imbalance_gate_fails_a_steering_program_and_passes_plain_hashing(tmp_path):
    steered = _udp_trace(tmp_path / "steered.parquet", steered=True)
    hashed = _udp_trace(tmp_path / "hashed.parquet", steered=False)
    out = tmp_path / "s.json"
    bad = run(steered, "--fail-on", "imbalance>1.5", "--json", out)
    assert bad.exit_code == 1, bad.output
    summary = json.loads(out.read_text())
    jsonschema.validate(summary, result_schema())
    assert summary["mismatched"] == 0  # the model predicts the program: the gate alone fails
    (gate,) = summary["gates"]
    assert not gate["passed"] and gate["value"] > 3
    assert "tracekit: gate imbalance>1.5 failed: h1 udp 127.0.0.1:5353: busiest socket took" in bad.output
    balance = summary["groups"][0]["balance"]
    assert balance["sockets"] == 4 and balance["total"] == N and balance["p_value"] < 1e-6

    good = run(hashed, "--fail-on", "imbalance>1.5", "--json", out)
    assert good.exit_code == 0, good.output
    summary = json.loads(out.read_text())
    assert summary["gates"][0]["passed"] and summary["groups"][0]["balance"]["p_value"] > 0.01
    assert summary["groups"][0]["balance"]["max_over_mean"] < 1.5


def test_a_small_groups_chance_spread_does_not_trip_the_gate():
    from tracekit.replay.balance import balance_of

    figures = balance_of({"1": 5, "2": 1, "3": 2}, [1, 2, 3])  # 1.9x the mean, but 8 decisions
    summary = {"groups": [{"host": "h", "group": "g", "balance": figures}]}
    assert figures["max_over_mean"] > 1.5 and figures["p_value"] > 0.01
    assert parse_gate("imbalance>1.5").evaluate(summary)["passed"]


def test_resets_gate_on_a_recorded_rolling_restart(tmp_path):
    from pathlib import Path

    trace = Path(__file__).resolve().parents[2] / "fixtures/recorded/story-rolling-restart-no-migrate.parquet"
    r = replay(trace, fail_on=["resets>0", "unknown>5%"])
    resets, unknown = r.summary["gates"]
    assert not resets["passed"] and resets["value"] == 11 == r.summary["groups"][0]["resets"]
    assert unknown["passed"] and r.exit_code == 1
    assert replay(trace, fail_on=["resets>11"]).exit_code == 0


@pytest.mark.parametrize("spec", ["imbalance", "imbalance<2", "speed>1", "resets>5%", "unknown>120%"])
def test_bad_gates_are_usage_errors_before_any_replay(tmp_path, spec):
    with pytest.raises(TracekitError, match="--fail-on"):
        parse_gate(spec)
    result = run(tmp_path / "does-not-exist.parquet", "--fail-on", spec)
    assert result.exit_code == 2 and "--fail-on" in result.output


@pytest.mark.parametrize("values", [[6, 7, 4], [340, 20, 20, 20], [1, 0], [100, 101, 99, 100, 0]])
def test_chi_square_is_scipy_stats(values):
    from scipy.stats import chisquare

    from tracekit.replay.balance import chisquare_uniform

    expected = chisquare(values)
    statistic, p_value = chisquare_uniform(values)
    assert statistic == pytest.approx(float(expected.statistic), rel=1e-12)
    assert p_value == pytest.approx(float(expected.pvalue), rel=1e-9, abs=1e-300)


def test_p_values_that_underflow_are_zero_without_scipy():
    """Where Cephes' chdtrc underflows to 0 (a skewed group: a rolling restart), the p-value is
    0.0 without importing scipy; everywhere else it is scipy's own."""
    from scipy.special import chdtrc

    from tracekit.replay.balance import _p_value_if_zero

    zeros = 0
    for df in (1, 2, 3, 7, 15, 39, 40, 41, 45, 99, 399, 400, 401, 1000, 5000):
        for statistic in (0.5, 2.5, 10.0, 100.0, 1000.0, 1400.0, 1500.0, 1600.0, 2000.0,
                          5000.0, 1e4, 1.05e4, 1.1e4, 1e5, 1e7, 1e12):
            shortcut = _p_value_if_zero(df, statistic)
            if shortcut is not None:
                zeros += 1
                assert shortcut == 0.0 and float(chdtrc(df, statistic)) == 0.0, (df, statistic)
    assert zeros > 50


def test_a_skewed_group_needs_no_scipy():
    """A group whose load moved under a rolling restart has p = 0: its balance is computed
    without importing scipy; an even one imports it."""
    import subprocess
    import sys

    code = ("import sys; from tracekit.replay.balance import balance_of; "
            "print(balance_of(dict(zip(sys.argv[1::2], map(int, sys.argv[2::2]))), [1, 2])"
            "['p_value'], 'scipy' in sys.modules)")
    for load, zero in (({"1": 100_000, "2": 20_000, "3": 3}, True), ({"1": 1_000, "2": 1_010}, False)):
        argv = [str(v) for kv in load.items() for v in kv]
        out = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True,
                             check=True)
        p_value, scipy_imported = out.stdout.split()
        assert (float(p_value) == 0.0) == zero and scipy_imported == str(not zero)


_gate_results = st.lists(st.builds(lambda n, ok: {"gate": f"resets>{n}", "passed": ok, "value": n,
                                                  "failures": [] if ok else ["over"]},
                                   st.integers(0, 9), st.booleans()), max_size=3)
_baselines = st.none() | st.builds(lambda new, known, fixed: {"new": new, "known": known, "fixed": fixed},
                                   st.integers(0, 3), st.integers(0, 3), st.integers(0, 3))


@given(mismatched=st.integers(0, 5), baseline=_baselines, gates=_gate_results)
def test_exit_code_and_ci_headline_decide_alike(mismatched, baseline, gates):
    from tracekit.replay.api import Replay
    from tracekit.replay.gates import ci_outcome
    from tracekit.report.gating import gate_headline

    summary = {"mismatched": mismatched, "gates": gates}
    if baseline is not None:
        summary["baseline"] = baseline
    outcome = ci_outcome(summary)
    counted = baseline["new"] if baseline is not None else mismatched
    assert outcome.passed == (not counted and all(g["passed"] for g in gates))
    assert Replay(summary, None).exit_code == (0 if outcome.passed else 1)
    headline = gate_headline(summary)
    if baseline is None and not gates:
        assert headline is None
    else:
        assert headline[0] == outcome.passed
        assert headline[1].startswith("CI PASS" if outcome.passed else "CI FAIL")
