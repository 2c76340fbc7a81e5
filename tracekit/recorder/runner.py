"""Run a scenario in a forked child inside a new network namespace and bring its events back.

The child enters the namespace, so the caller's namespace, sysctls and CPU affinity are never
touched. Results and errors cross back over a pipe as pickles."""

from __future__ import annotations

import os
import pickle
import traceback
from dataclasses import dataclass
from typing import Any

from tracekit.recorder import netns
from tracekit.recorder.observer import OBSERVER_NAME
from tracekit.recorder.reprobe import REPROBE_NAME
from tracekit.recorder.scenario import Scenario
from tracekit.recorder.session import HOST, Outcomes, RecordError, Reprobed, Session
from tracekit.errors import TracekitError

MIB_KEYS = ("TCPMigrateReqSuccess", "TCPMigrateReqFailure")


@dataclass(frozen=True)
class Capture:
    """What one recording produced: the rows, the file metadata, and per-label outcomes."""

    rows: list[dict[str, Any]]
    metadata: dict[str, str]
    outcomes: Outcomes
    mib: dict[str, int]


class RecordingFailed(TracekitError):
    """The recording child failed; the message carries its error."""


def _record_in_child(scenario: Scenario, command: str) -> Capture:
    netns.enter_private_netns()
    session = Session()
    for index, step in enumerate(scenario.steps, start=1):
        try:
            session.run(step)
        except RecordError as err:
            raise RecordError(f"{scenario.source}: step {index} ({step.op}): {err}") from None
    session.finish()
    mib = {key: value for key, value in netns.read_mib().items() if key in MIB_KEYS}
    metadata = {
        "tracekit.source": "record",
        "tracekit.kernel": os.uname().release,
        "tracekit.kernel.version": os.uname().version,  # a distribution names its stable release here
        "tracekit.command": command,
        "tracekit.scenario": scenario.name,
        "tracekit.observer": OBSERVER_NAME,
        "tracekit.observations": "complete",  # every datagram is received or was dropped
        "tracekit.host": HOST,
        "tracekit.cpus": str(session.ncpu),
    } | _reprobe_metadata(session.reprobe_unseen()) | {f"tracekit.mib.{key}": str(value) for key, value in sorted(mib.items())}
    outcomes = Outcomes(dict(session.outcomes.flows), dict(session.outcomes.cpus), dict(session.outcomes.rets), dict(session.outcomes.delivered))
    return Capture(session.rows, metadata, outcomes, mib)


def _reprobe_metadata(counts: Reprobed) -> dict[str, str]:
    """When rows were re-probed: the second observer in `tracekit.observer`, and how many rows it
    gave a `hash` (`reprobed`) or an `sk_hash` (`sk_hash`), and how many it could not."""
    metadata: dict[str, str] = {}
    if counts.hash or counts.hash_unresolved:
        metadata |= {"tracekit.observer.reprobed": str(counts.hash),
                     "tracekit.observer.unresolved": str(counts.hash_unresolved)}
    if counts.sk_hash or counts.sk_hash_unresolved:
        metadata |= {"tracekit.observer.sk_hash": str(counts.sk_hash),
                     "tracekit.observer.sk_hash_unresolved": str(counts.sk_hash_unresolved)}
    if metadata:
        metadata["tracekit.observer"] = f"{OBSERVER_NAME}+{REPROBE_NAME}"
    return metadata


def run_in_namespace(function, *args: Any) -> Any:
    """Call function(*args) in a forked child that may enter namespaces; return its result."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(read_fd)
        try:
            payload = (True, function(*args))
        except TracekitError as err:
            payload = (False, (type(err).__name__, str(err), None))
        except BaseException as err:  # noqa: BLE001 - everything must cross back to the parent
            payload = (False, (type(err).__name__, str(err), traceback.format_exc()))
        try:
            data = pickle.dumps(payload)
        except Exception as err:  # noqa: BLE001
            data = pickle.dumps((False, (type(err).__name__, f"unpicklable result: {err}", traceback.format_exc())))
        with os.fdopen(write_fd, "wb") as out:
            out.write(data)
        os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    if not data:
        raise RecordingFailed(f"the recording process died (wait status {status}) without reporting")
    ok, result = pickle.loads(data)
    if ok:
        return result
    name, message, trace = result
    if trace is None:
        raise RecordingFailed(message)
    raise RuntimeError(f"recording failed with {name}: {message}\n{trace}")


def capture(scenario: Scenario, command: str) -> Capture:
    return run_in_namespace(_record_in_child, scenario, command)


def _probe() -> str | None:
    netns.enter_private_netns()
    from tracekit.recorder.observer import Observer

    Observer()
    return None


def unsupported_reason() -> str | None:
    """None if this machine can record; otherwise what is missing, in words."""
    try:
        return run_in_namespace(_probe)
    except RecordingFailed as err:
        return str(err)
