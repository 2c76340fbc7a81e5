"""The model against the real kernel: random walks and the built-in scenarios are recorded here,
replayed, and every decision must match what the kernel did.

Every decision is predictable from a recorded trace: the observer gives the kernel's hash and CPU
of each selection, the recorder re-probes the hashes the observer could not see (groups running a
classic BPF program, or whose program was detached) and the `sk_hash` of connections to wildcard
listeners. So random walks and scenarios alike must give no mismatch and no unknown.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from tracekit.recorder import list_scenarios, record
from tracekit.recorder.policies import SCENARIO_POLICIES
from tracekit.replay import replay

pytestmark = pytest.mark.kernel

SEEDS = range(24)
STEPS = 200
SCENARIOS = sorted(list_scenarios())


@dataclass(frozen=True)
class Judged:
    """One recording replayed: its summary, every decision, and how to redo it."""

    summary: dict
    decisions: object  # pandas.DataFrame of every decision
    command: str


_judged: dict[str, Judged] = {}


def judge(tmp_dir: Path, *, seed: int | None = None, scenario: str | None = None) -> Judged:
    """Record (once per run) and replay with every decision kept."""
    key = scenario or f"random-{seed}-{STEPS}"
    if key not in _judged:
        path = tmp_dir / f"{key}.parquet"
        if seed is not None:
            command = f"tracekit record --random {seed} --steps {STEPS} -o {key}.parquet"
            record(random_seed=seed, steps=STEPS, output=path, command=command, strict=False)
        else:
            command = f"tracekit record {scenario} -o {key}.parquet"
            record(scenario, output=path, command=command, strict=False)
        result = replay(path, results=True, policies=SCENARIO_POLICIES.get(scenario or ""))
        _judged[key] = Judged(result.summary, result.decisions, command)
    return _judged[key]


@pytest.fixture(scope="module")
def traces(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("differential")


def mismatch_report(judged: Judged) -> str:
    s = judged.summary
    lines = [f"{s['mismatched']} of {s['decisions']} decisions disagree with the kernel; "
             f"redo the operations with `{judged.command}` (hashes differ per namespace)"]
    for m in s["mismatches"][:5]:
        lines.append(f"  seq {m['seq']} {m['event']} {m['group']}: {m['explanation']}")
    return "\n".join(lines)


def unknown_report(judged: Judged, unknown) -> str:
    rows = unknown[["seq", "event", "group", "reason"]].head(5).to_string(index=False)
    return f"{len(unknown)} decision(s) unknown ({judged.summary['unknown_reasons']}) in `{judged.command}`:\n{rows}"


@pytest.mark.parametrize("seed", SEEDS)
def test_random_walk_agrees_with_the_kernel(traces, seed):
    judged = judge(traces, seed=seed)
    s, d = judged.summary, judged.decisions
    assert s["mismatched"] == 0, mismatch_report(judged)
    assert s["unknown"] == 0, unknown_report(judged, d[d["verdict"] == "unknown"])
    assert s["decisions"] >= 150, f"only {s['decisions']} decisions in `{judged.command}`"
    kernel_migrations = int(s["trace"]["metadata"]["tracekit.mib.TCPMigrateReqSuccess"])
    model_migrations = sum(g["migrations"].get("migrated", 0) for g in s["groups"])
    assert model_migrations == kernel_migrations, f"`{judged.command}`: model migrated {model_migrations}, kernel {kernel_migrations}"


@pytest.mark.parametrize("name", SCENARIOS)
def test_scenario_agrees_with_the_kernel(traces, name):
    judged = judge(traces, scenario=name)
    s, d = judged.summary, judged.decisions
    assert s["mismatched"] == 0, mismatch_report(judged)
    assert s["unknown"] == 0, unknown_report(judged, d[d["verdict"] == "unknown"])


def test_the_run_judges_thousands_of_decisions(traces):
    total = sum(judge(traces, seed=seed).summary["decisions"] for seed in SEEDS)
    total += sum(judge(traces, scenario=name).summary["decisions"] for name in SCENARIOS)
    matched = sum(j.summary["matched"] for j in _judged.values())
    print(f"\ndifferential: {total} decisions ({matched} matched) over {len(SEEDS)} random walks "
          f"of {STEPS} steps and {len(SCENARIOS)} scenarios")
    assert total >= 5000
    events = set().union(*(set(j.decisions["reason"]) for j in _judged.values()))
    assert {"hash", "incoming-cpu", "cbpf", "migration", "connected", "established-skip"} <= events
    # migrations from wildcard listeners, which pick by the re-probed sk_hash
    wildcard = sum(((j.decisions["reason"] == "migration") & j.decisions["group"].str.contains(r"0\.0\.0\.0|\[::\]")).sum()
                   for j in _judged.values())
    assert wildcard >= 100
