"""JSON Lines (the format's interchange form) to a Parquet trace, checking every row.

Two readers produce the same rows. Arrow's, in bulk (`tracekit.trace.bulk_jsonl`), goes first;
when it or a check refuses anything, the file is read again line by line with `json`, which names
the line and column of the first error (or accepts what the bulk reader could not vouch for).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tracekit.errors import TraceFormatError, TracekitError
from tracekit.kernel.profiles import is_release
from tracekit.trace.bulk_jsonl import BulkRefused, arrow_batches
from tracekit.trace.convert import rows_to_batch
from tracekit.trace.schema import load_spec
from tracekit.trace.write import CHUNK_ROWS, Located, file_metadata, write_batches

__all__ = ["normalize_jsonl"]


def normalize_jsonl(
    input: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    host: str | None = None,
    kernel: str | None = None,
    bulk: bool = True,
) -> Path:
    """Convert the JSON Lines trace ``input`` into the Parquet trace ``output``; return its path.

    One JSON object per line with the format's column names; ``payload`` and ``prog`` are hex
    strings; blank lines are skipped. ``host`` fills rows without one; ``kernel`` (the capture
    host's ``uname -r``) is stored as ``tracekit.kernel``. Errors name the input's line and column;
    ``output`` is then left untouched. ``bulk=False`` skips Arrow's reader and reads line by line
    (the same rows, slower; what the bulk path falls back to).
    """
    source, output = Path(input), Path(output)
    if not source.is_file():
        raise TracekitError(f"{source}: no such file")
    with open(source, "rb") as handle:
        if handle.read(4) == b"PAR1":
            raise TracekitError(f"{source}: is already a Parquet file; check it with `tracekit validate`")
    metadata = {"tracekit.normalized_from": source.name}
    if kernel is not None:
        if not is_release(kernel):
            raise TracekitError(f"--kernel {kernel!r} is not a kernel release (`uname -r`, e.g. 6.8.0-45-generic)")
        metadata["tracekit.kernel"] = kernel
    metadata = file_metadata(metadata, "normalize")
    if bulk:
        try:
            return write_batches(output, ((batch, None) for batch in arrow_batches(source, host)),
                                 metadata, file=str(source))
        except (BulkRefused, TraceFormatError):
            pass  # the line-by-line reader names the error's line and column, or accepts it
    return write_batches(output, _batches(source, host), metadata, file=str(source))


def _batches(source: Path, default_host: str | None) -> Iterator[Located]:
    binary = [c.name for c in load_spec().columns if c.kind == "binary"]
    rows: list[dict[str, Any]] = []
    lines: list[int] = []
    with open(source, "rb") as handle:
        for number, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            row = _parse(text, file=str(source), line=number)
            if default_host is not None and row.get("host") is None:
                row["host"] = default_host
            for name in binary:
                if row.get(name) is not None:
                    row[name] = _unhex(row[name], file=str(source), line=number, column=name)
            rows.append(row)
            lines.append(number)
            if len(rows) == CHUNK_ROWS:
                yield rows_to_batch(rows, file=str(source), lines=lines), lines
                rows, lines = [], []
    if rows:
        yield rows_to_batch(rows, file=str(source), lines=lines), lines


def _parse(text: bytes, *, file: str, line: int) -> dict[str, Any]:
    try:
        row = _DECODER.decode(text.decode("utf-8"))
    except json.JSONDecodeError as error:
        raise TraceFormatError(f"invalid JSON: {error.msg} at character {error.colno}", file=file, line=line) from None
    except UnicodeDecodeError as error:
        raise TraceFormatError(f"invalid JSON: not UTF-8 ({error.reason} at byte {error.start + 1})", file=file, line=line) from None
    if not isinstance(row, dict):
        raise TraceFormatError(f"expected a JSON object, got {type(row).__name__}", file=file, line=line)
    return row


class JsonNumber:
    """A JSON number that is not an integer: kept as written, so Arrow refuses it for every column
    (all numeric columns are integers) and the error shows it as the input had it."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


_DECODER = json.JSONDecoder(parse_float=JsonNumber, parse_constant=JsonNumber)


def _unhex(value: Any, *, file: str, line: int, column: str) -> bytes:
    if isinstance(value, str):
        try:
            return bytes.fromhex(value)
        except ValueError:
            pass
    raise TraceFormatError(f"expected a hex string, got {value!r}", file=file, line=line, column=column)
