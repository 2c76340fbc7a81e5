"""The decision record: one per observation the model can predict, and its Arrow schema (the
`--results` Parquet file)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa

DECISION_SCHEMA = pa.schema([
    pa.field("host", pa.string(), nullable=False),
    pa.field("seq", pa.int64(), nullable=False),
    pa.field("event", pa.string(), nullable=False),
    pa.field("laddr", pa.string()),
    pa.field("lport", pa.int32()),
    pa.field("raddr", pa.string()),
    pa.field("rport", pa.int32()),
    pa.field("sk", pa.int64()),
    pa.field("group", pa.string()),
    pa.field("reuseport_id", pa.int64()),
    pa.field("expected", pa.int64(), nullable=False),
    pa.field("observed", pa.int64(), nullable=False),
    pa.field("verdict", pa.string(), nullable=False),
    pa.field("reason", pa.string(), nullable=False),
    pa.field("explanation", pa.string()),
], metadata={b"tracekit.format": b"tracekit-results/1"})

FIELDS = tuple(DECISION_SCHEMA.names)


@dataclass(frozen=True)
class Decision:
    """`expected`/`observed`: a socket id, or -1 for none (reset, dropped, NULL)."""

    host: str
    seq: int
    event: str
    laddr: str | None
    lport: int | None
    raddr: str | None
    rport: int | None
    sk: int | None
    group: str | None
    reuseport_id: int | None
    expected: int
    observed: int
    verdict: str
    reason: str
    explanation: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def verdict_of(expected: int, observed: int, unknown: str | None) -> str:
    """Three-valued: an unknown is never a mismatch, and a mismatch is never hidden by one."""
    if unknown is not None:
        return "unknown"
    return "match" if expected == observed else "mismatch"


def decisions_to_batch(records: list[Decision]) -> pa.RecordBatch:
    columns = {name: [getattr(r, name) for r in records] for name in FIELDS}
    return pa.RecordBatch.from_pydict(columns, schema=DECISION_SCHEMA)


def repeated(value: str, n: int) -> pa.Array:
    """A string column of `n` times `value` (for decisions made in bulk)."""
    return pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)),
                                          pa.array([value])).cast(pa.string())


def decoded(indices: np.ndarray, dictionary: pa.Array) -> pa.Array:
    """The string column `dictionary[indices]`."""
    return pa.DictionaryArray.from_arrays(pa.array(np.asarray(indices).astype(np.int32)),
                                          dictionary).cast(pa.string())
