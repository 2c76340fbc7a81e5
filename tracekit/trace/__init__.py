"""The trace format ``tracekit-trace/1``: schema, writing, reading, validating, normalizing.

The format's definition lives in ``schemas/tracekit-trace-1.json`` (loaded by
`tracekit.trace.schema`); the prose contract is in the README's "Trace format" section.
"""

from tracekit.trace.normalize import normalize_jsonl
from tracekit.trace.read import iter_batches, read_metadata, read_trace, trace_hosts
from tracekit.trace.schema import SCHEMA, TRACE_FORMAT, load_spec
from tracekit.trace.validate import HostSummary, TraceSummary, validate_trace
from tracekit.trace.write import write_trace

__all__ = [
    "trace_hosts",
    "SCHEMA",
    "TRACE_FORMAT",
    "HostSummary",
    "TraceSummary",
    "iter_batches",
    "load_spec",
    "normalize_jsonl",
    "read_metadata",
    "read_trace",
    "validate_trace",
    "write_trace",
]
