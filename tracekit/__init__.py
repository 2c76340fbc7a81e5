"""tracekit: record/replay trace analyzer for Linux SO_REUSEPORT (net/core/sock_reuseport.c).

The Python API (each name is imported on first use, so ``import tracekit`` stays cheap):

- ``read_trace(path) -> pandas.DataFrame``: a trace (Parquet file or ``host=`` directory).
- ``write_trace(path, rows, metadata=None, *, source)``: check rows and write a trace.
- ``normalize(input, output, *, host=None, kernel=None)``: JSON Lines to a Parquet trace.
- ``validate(path) -> TraceSummary``: check a trace against the format; raises
  `TraceFormatError` naming the first bad row.
- ``record``, ``simulate``, ``probe``, ``replay``: capture and replay (available once installed parts
  provide them).

Errors a user can act on are `tracekit.errors.TracekitError` subclasses.
"""

from __future__ import annotations

from tracekit.lazy import lazy_names

__all__ = [
    "normalize",
    "probe",
    "read_trace",
    "record",
    "replay",
    "simulate",
    "validate",
    "write_trace",
]

# name -> (module, attribute); resolved lazily so that `tracekit --help` imports no pyarrow.
_LAZY = {
    "read_trace": ("tracekit.trace.read", "read_trace"),
    "write_trace": ("tracekit.trace.write", "write_trace"),
    "normalize": ("tracekit.trace.normalize", "normalize_jsonl"),
    "validate": ("tracekit.trace.validate", "validate_trace"),
    "replay": ("tracekit.replay.api", "replay"),
    "record": ("tracekit.recorder.api", "record"),
    "simulate": ("tracekit.simulator.api", "simulate"),
    "probe": ("tracekit.probe.run", "probe"),
}

__getattr__, __dir__ = lazy_names(__name__, _LAZY)
