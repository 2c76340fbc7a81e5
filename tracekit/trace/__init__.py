"""The trace format ``tracekit-trace/1``: schema, writing, reading, validating, normalizing.

The format's definition lives in ``schemas/tracekit-trace-1.json`` (loaded by
`tracekit.trace.schema`); the prose contract is in the README's "Trace format" section.
"""

from tracekit.lazy import lazy_names

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

# Imported on first use: a replay reads traces but never normalizes, validates or writes one.
__getattr__, __dir__ = lazy_names(__name__, {
    "normalize_jsonl": ("tracekit.trace.normalize", "normalize_jsonl"),
    **{name: ("tracekit.trace.read", name)
       for name in ("iter_batches", "read_metadata", "read_trace", "trace_hosts")},
    **{name: ("tracekit.trace.schema", name) for name in ("SCHEMA", "TRACE_FORMAT", "load_spec")},
    **{name: ("tracekit.trace.validate", name)
       for name in ("HostSummary", "TraceSummary", "validate_trace")},
    "write_trace": ("tracekit.trace.write", "write_trace"),
})
