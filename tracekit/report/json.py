"""The ``--json`` summary: canonical bytes, and the JSON Schema it follows.

Canonical means sorted keys, two-space indentation, fixed separators, UTF-8, a trailing newline:
the same summary always gives the same bytes, so two runs over one trace can be compared with
``cmp`` and a stored summary diffs line by line.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from importlib import resources
from typing import Any

__all__ = ["RESULT_FORMAT", "summary_json", "result_schema"]

RESULT_FORMAT = "tracekit-result/1"


def summary_json(summary: Mapping[str, Any]) -> bytes:
    """The summary as canonical JSON bytes (byte-identical for identical inputs).

    NaN and infinities are refused: they are not JSON, and a count is never one.
    """
    text = json.dumps(
        summary,
        sort_keys=True,
        indent=2,
        separators=(",", ": "),
        ensure_ascii=False,
        allow_nan=False,
        default=_plain_number,
    )
    return (text + "\n").encode("utf-8")


def _plain_number(value: Any) -> Any:
    """numpy scalars (an int64 count that slipped into the summary) as Python numbers."""
    item = getattr(value, "item", None)
    if callable(item) and type(value).__module__ == "numpy":
        return item()
    raise TypeError(f"summary value {value!r} of type {type(value).__name__} is not JSON")


def result_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a ``tracekit-result/1`` summary."""
    text = resources.files(__package__).joinpath("result_schema.json").read_text("utf-8")
    return json.loads(text)
