"""Recording on another kernel: boot it in a VM (`tracekit.vmlab`) and run the recorder there.

The guest runs this machine's own Python and tracekit (its root is this machine's, read-only), so
the recorder is the same code; only the kernel differs, and the traces carry its `uname -r` as
`tracekit.kernel`. One boot can record several traces (`record_in_guest` takes a list of
`GuestJob`s): booting an emulated machine costs a minute or more, recording a scenario seconds.

In the guest, ``python -m tracekit.recorder.guest JOBS.json`` records each job into the shared work
directory and writes ``outcomes.json``: per job, the `[[expect]]` failures or the error that
stopped it.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tracekit.errors import TracekitError

__all__ = ["GuestJob", "GuestOutcome", "record_in_guest", "record_one_in_guest", "DEFAULT_TIMEOUT"]

# Seconds for all of a boot's recordings: TCG emulates the guest's CPUs, and a random walk of a
# few hundred steps takes minutes on a busy 2-core host.
DEFAULT_TIMEOUT = 1800.0
_JOBS = "jobs.json"
_OUTCOMES = "outcomes.json"
# Provenance of a trace recorded in a guest (file metadata `tracekit.vm`).
VM_METADATA = "qemu-system-x86_64 -accel tcg -cpu max, this machine's root read-only over 9p (tracekit.vmlab)"


@dataclass(frozen=True)
class GuestJob:
    """One recording: a built-in scenario name or a .toml file in the work directory, or a random walk."""

    output: str  # file name in the work directory
    scenario: str | None = None
    random_seed: int | None = None
    steps: int | None = None
    command: str | None = None


@dataclass(frozen=True)
class GuestOutcome:
    job: GuestJob
    path: Path | None  # the trace on the host; None when the job failed before writing it
    failures: list[str] = field(default_factory=list)  # broken [[expect]] tables
    error: str | None = None  # why the recorder refused or failed


def record_in_guest(
    kernel: str | Path, jobs: Sequence[GuestJob], *, directory: str | Path, timeout: float = DEFAULT_TIMEOUT
) -> tuple[str, list[GuestOutcome]]:
    """Boot `kernel` once and record every job into `directory`; (the guest's release, outcomes)."""
    from tracekit import vmlab

    directory = Path(directory).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    (directory / _JOBS).write_text(json.dumps([asdict(job) for job in jobs]))
    (directory / _OUTCOMES).unlink(missing_ok=True)
    result = vmlab.run_in_guest(
        kernel, vmlab.python_argv("-m", "tracekit.recorder.guest", _JOBS),
        outputs=[_OUTCOMES], workdir=directory, timeout=timeout,
    )
    outcomes = []
    for job, raw in zip(jobs, json.loads(result.files[_OUTCOMES])):
        path = directory / job.output
        outcomes.append(GuestOutcome(job, path if path.is_file() else None, raw["failures"], raw["error"]))
    return result.kernel, outcomes


def record_one_in_guest(
    kernel: str | Path,
    scenario: str | Path | None,
    *,
    random_seed: int | None,
    steps: int | None,
    output: str | Path,
    command: str | None,
    timeout: float = DEFAULT_TIMEOUT,
) -> GuestOutcome:
    """Record one scenario (name or .toml file) or random walk on `kernel` into `output` (atomically)."""
    from tracekit.recorder.library import resolve_scenario
    from tracekit.trace.output import atomic_path

    if scenario is not None and not isinstance(scenario, (str, Path)):
        raise TracekitError("recording in a VM needs a built-in scenario name or a .toml file, not a Scenario object")
    with tempfile.TemporaryDirectory(prefix="tracekit-record-vm-") as scratch:
        name = None
        if scenario is not None:
            resolve_scenario(scenario)  # refuse a bad name or file before booting
            name = str(scenario)
            if Path(scenario).suffix == ".toml" or Path(scenario).exists():
                name = Path(scenario).name  # the guest does not see the host's /tmp: copy the file
                shutil.copyfile(scenario, Path(scratch) / name)
        job = GuestJob("trace.parquet", name, random_seed, steps, command)
        _, (outcome,) = record_in_guest(kernel, [job], directory=scratch, timeout=timeout)
        if outcome.error is not None:
            raise TracekitError(f"in the {kernel} guest: {outcome.error}")
        target = Path(output)
        with atomic_path(target) as temporary:
            shutil.copyfile(outcome.path, temporary)
        return GuestOutcome(job, target, outcome.failures, None)


def _run_jobs(jobs_file: str) -> int:
    """The guest side: record each job, write the outcomes; exit 0 (errors are in the outcomes)."""
    from tracekit.recorder.api import record_scenario
    from tracekit.trace import write_trace

    outcomes = []
    for raw in json.loads(Path(jobs_file).read_text()):
        job = GuestJob(**raw)
        try:
            recording = record_scenario(job.scenario, random_seed=job.random_seed, steps=job.steps, command=job.command)
            metadata = {**recording.capture.metadata, "tracekit.vm": VM_METADATA}
            write_trace(job.output, recording.capture.rows, metadata, source="record")
            outcomes.append({"failures": recording.failures, "error": None})
        except TracekitError as error:
            outcomes.append({"failures": [], "error": str(error)})
        print(f"{job.output}: {outcomes[-1]}", flush=True)
    Path(_OUTCOMES).write_text(json.dumps(outcomes))
    return 0


if __name__ == "__main__":
    sys.exit(_run_jobs(sys.argv[1]))
