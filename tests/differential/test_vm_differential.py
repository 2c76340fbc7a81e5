"""The model against other real kernels, booted under QEMU (tracekit.vmlab): Debian's 6.1 and 6.12.

One boot per kernel records the scenarios that tell the kernels apart and a few random walks
(`tracekit.recorder.guest.record_in_guest`); the traces are replayed here, on the host. Each must
replay under `--profile auto` with 0 mismatches and 0 unknown, auto must pick the profile the
kernel was verified against (`KERNELS`; tracekit.kernel.profiles.VERIFIED), and the deciding
scenarios must reject the neighbouring profiles, so a wrong auto choice cannot pass.

The full matrix (every scenario, longer walks) is the same code with more jobs; README "Kernel
profiles" lists its figures. Budget here: about 5 minutes of TCG per kernel on 2 busy cores.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tracekit.recorder.guest import GuestJob, record_in_guest
from tracekit.recorder.policies import SCENARIO_POLICIES
from tracekit.replay import replay
from tracekit.replay.fit import fit_profile
from tracekit.vmlab import unavailable_reason

pytestmark = [pytest.mark.vm, pytest.mark.slow]

# KERNEL prefix -> the profile verified on it
KERNELS = {"6.1": "6.10", "6.12": "6.10"}
# scenario -> the profile that must fail on it where the kernels differ
DECIDING = {
    "story-incoming-cpu": "5.14",  # SO_INCOMING_CPU-aware selection (6.2)
    "story-udp-connected": "6.13",  # a connected UDP socket stays in its group before 6.13
    "selftest-reuseport_bpf_cpu-udp4": None,  # classic BPF steering by CPU
    "story-rolling-restart-migrate": None,  # listener migration
}
WALKS = ((5, 80), (1, 120))  # `tracekit record --random 5 --steps 80 --vm KERNEL`: the check

_recorded: dict[str, tuple[str, dict[str, Path]]] = {}


def _jobs(kernel: str) -> list[GuestJob]:
    jobs = [GuestJob(f"{name}.parquet", scenario=name, command=f"tracekit record {name} --vm {kernel}")
            for name in DECIDING]
    jobs += [GuestJob(f"random-{seed}-{steps}.parquet", random_seed=seed, steps=steps,
                      command=f"tracekit record --random {seed} --steps {steps} --vm {kernel}")
             for seed, steps in WALKS]
    return jobs


def recorded(kernel: str, tmp_path_factory) -> tuple[str, dict[str, Path]]:
    """Boot `kernel` once per test run and record every job (skip where it cannot boot)."""
    reason = unavailable_reason(kernel)
    if reason:
        pytest.skip(f"cannot boot a {kernel} guest here: {reason}")
    if kernel not in _recorded:
        directory = tmp_path_factory.mktemp(f"vm-{kernel}")
        release, outcomes = record_in_guest(kernel, _jobs(kernel), directory=directory, timeout=1500)
        errors = [f"{o.job.output}: {o.error}" for o in outcomes if o.error]
        assert not errors, errors
        _recorded[kernel] = release, {o.job.output.removesuffix(".parquet"): o.path for o in outcomes}
    return _recorded[kernel]


def _replay(path: Path, name: str, profile: str = "auto"):
    return replay(path, profile=profile, policies=SCENARIO_POLICIES.get(name), results=True)


@pytest.mark.parametrize("kernel", KERNELS)
def test_every_recording_replays_clean_under_auto(kernel, tmp_path_factory):
    release, traces = recorded(kernel, tmp_path_factory)
    assert release.startswith(kernel + ".")
    expected = KERNELS[kernel]
    total = 0
    for name, path in traces.items():
        result = _replay(path, name)
        s = result.summary
        assert s["trace"]["kernel"] == release and "tracekit.vm" in s["trace"]["metadata"]
        assert s["profile"]["name"] == expected, f"{name}: auto chose {s['profile']}"
        assert s["mismatched"] == 0, f"{name} on {release}: {s['mismatches'][:3]}"
        assert s["unknown"] == 0, f"{name} on {release}: {s['unknown_reasons']}"
        total += s["decisions"]
    assert total >= 150


@pytest.mark.parametrize("kernel", KERNELS)
def test_deciding_scenarios_reject_the_other_kernels_profiles(kernel, tmp_path_factory):
    _, traces = recorded(kernel, tmp_path_factory)
    for name, wrong in DECIDING.items():
        if wrong is not None:
            assert _replay(traces[name], name, wrong).summary["mismatched"] > 0, f"{name} under {wrong}"
    fit = fit_profile(traces["story-udp-connected"])
    assert KERNELS[kernel] in fit.tied and "6.13" not in fit.tied
