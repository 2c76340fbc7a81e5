"""The recorder's Python API: `record()` a scenario or a random walk into a trace file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tracekit.recorder.expectations import check_expectations
from tracekit.recorder.library import list_scenarios, resolve_scenario
from tracekit.recorder.randomwalk import random_scenario
from tracekit.recorder.runner import Capture, capture
from tracekit.recorder.scenario import Scenario
from tracekit.errors import TracekitError

__all__ = ["record", "record_scenario", "list_scenarios", "Recording", "ExpectationFailed"]


class ExpectationFailed(TracekitError):
    """The kernel did not do what the scenario's [[expect]] tables say."""


@dataclass(frozen=True)
class Recording:
    scenario: Scenario
    capture: Capture
    failures: list[str]


def record_scenario(
    scenario: str | Path | Scenario | None = None, *, random_seed: int | None = None, steps: int | None = None, command: str | None = None
) -> Recording:
    """Run a scenario (or a random walk) against the kernel in a private namespace; no file written."""
    if (scenario is None) == (random_seed is None):
        raise TracekitError("record needs either a scenario or random_seed (and steps), not both")
    if random_seed is not None:
        chosen = random_scenario(random_seed, 50 if steps is None else steps)
    else:
        chosen = resolve_scenario(scenario)
    result = capture(chosen, command or f"tracekit record {chosen.name}")
    return Recording(chosen, result, check_expectations(chosen, result))


def record(
    scenario: str | Path | Scenario | None = None,
    *,
    random_seed: int | None = None,
    steps: int | None = None,
    output: str | Path,
    command: str | None = None,
    strict: bool = True,
    vm: str | Path | None = None,
    vm_timeout: float | None = None,
) -> Path:
    """Record into the trace file `output` and return its path.

    With `strict`, a scenario whose expectations the kernel breaks raises ExpectationFailed after
    the trace is written (the trace is the evidence).

    With `vm`, record on that kernel instead of this machine's, booted for the occasion under QEMU
    (`tracekit.vmlab`): a kernel image path, a release installed under /boot (`6.1.0-57-amd64`)
    or a prefix (`6.1`: the newest installed 6.1). `scenario` is then a built-in name or a .toml
    file; `vm_timeout` bounds the recording in seconds (default
    `tracekit.recorder.guest.DEFAULT_TIMEOUT`)."""
    from tracekit.trace import write_trace

    if vm is not None:
        from tracekit.recorder.guest import DEFAULT_TIMEOUT, record_one_in_guest

        if (scenario is None) == (random_seed is None):
            raise TracekitError("record needs either a scenario or random_seed (and steps), not both")
        outcome = record_one_in_guest(vm, scenario, random_seed=random_seed, steps=steps, output=output,
                                      command=command, timeout=vm_timeout or DEFAULT_TIMEOUT)
        path, failures = Path(output), outcome.failures
    else:
        recording = record_scenario(scenario, random_seed=random_seed, steps=steps, command=command)
        path = write_trace(output, recording.capture.rows, recording.capture.metadata, source="record")
        failures = recording.failures
    if strict and failures:
        raise ExpectationFailed("the kernel broke the scenario's expectations:\n  " + "\n  ".join(failures))
    return Path(path)
