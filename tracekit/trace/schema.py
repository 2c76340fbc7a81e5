"""The trace format's machine-readable definition, loaded from ``schemas/tracekit-trace-1.json``.

That JSON file is the one source of truth: column names, Arrow types, required columns, value
constraints, the event vocabulary and which columns each event needs. This module turns it into
frozen records and a `pyarrow.Schema`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

import pyarrow as pa

__all__ = [
    "SCHEMA",
    "SCHEMA_FILE",
    "SORTED_KEY",
    "TRACE_FORMAT",
    "Column",
    "Event",
    "TraceSpec",
    "load_spec",
]

SCHEMA_FILE = "tracekit-trace-1.json"
SORTED_KEY = "tracekit.sorted_by"
"""File metadata key: `host,seq` when the writer stored the rows in that order."""

_ARROW_TYPES = {
    "int8": pa.int8(),
    "int32": pa.int32(),
    "int64": pa.int64(),
    "uint32": pa.uint32(),
    "string": pa.string(),
    "binary": pa.binary(),
    "dictionary<int32,string>": pa.dictionary(pa.int32(), pa.string()),
}


@dataclass(frozen=True)
class Column:
    """One column of the format; ``required`` columns are present and non-null in every row."""

    name: str
    type_name: str
    required: bool
    min: int | None
    max: int | None
    values: tuple[str | int, ...] | None
    doc: str
    format: str | None = None
    """``"ip"``: the text of an IPv4 or IPv6 address."""

    @property
    def arrow_type(self) -> pa.DataType:
        return _ARROW_TYPES[self.type_name]

    @property
    def kind(self) -> str:
        """``"int"``, ``"string"`` or ``"binary"``: the kind of value a row holds."""
        if self.type_name == "binary":
            return "binary"
        if "string" in self.type_name:
            return "string"
        return "int"

    def describe_range(self) -> str:
        if self.values is not None:
            return "one of " + ", ".join(str(v) for v in self.values)
        low = "" if self.min is None else str(self.min)
        high = "" if self.max is None else str(self.max)
        return f"out of range {low}..{high}"


@dataclass(frozen=True)
class Event:
    """An event name, the layer it belongs to and the columns it needs."""

    name: str
    layer: str
    requires: tuple[str, ...]
    uses: tuple[str, ...]
    doc: str


@dataclass(frozen=True)
class TraceSpec:
    format: str
    columns: tuple[Column, ...]
    events: tuple[Event, ...]
    metadata_keys: tuple[str, ...]
    sort_key: tuple[str, ...]

    def column(self, name: str) -> Column:
        return self.columns_by_name[name]

    @property
    def columns_by_name(self) -> dict[str, Column]:
        return {column.name: column for column in self.columns}

    @property
    def event_names(self) -> tuple[str, ...]:
        return tuple(event.name for event in self.events)


def _schema_text() -> str:
    # Installed: the file ships as package data of `tracekit._schemas` (mapped to schemas/ in
    # pyproject.toml). Running from a source tree without installing: read schemas/ directly.
    try:
        return resources.files("tracekit._schemas").joinpath(SCHEMA_FILE).read_text("utf-8")
    except (ModuleNotFoundError, FileNotFoundError, NotADirectoryError):
        source_tree = Path(__file__).resolve().parents[2] / "schemas" / SCHEMA_FILE
        return source_tree.read_text("utf-8")


@cache
def load_spec() -> TraceSpec:
    """Parse the format's JSON definition (once) into a `TraceSpec`."""
    raw = json.loads(_schema_text())
    columns = tuple(
        Column(
            name=c["name"],
            type_name=c["type"],
            required=c.get("required", False),
            min=c.get("min"),
            max=c.get("max"),
            values=tuple(c["values"]) if "values" in c else None,
            doc=c.get("doc", ""),
            format=c.get("format"),
        )
        for c in raw["columns"]
    )
    events = tuple(
        Event(
            name=name,
            layer=e["layer"],
            requires=tuple(e["requires"]),
            uses=tuple(e.get("uses", ())),
            doc=e.get("doc", ""),
        )
        for name, e in raw["events"].items()
    )
    known = {c.name for c in columns}
    for event in events:
        unknown = set(event.requires + event.uses) - known
        if unknown:
            raise ValueError(f"{SCHEMA_FILE}: event {event.name!r} names unknown columns {unknown}")
    return TraceSpec(
        format=raw["format"],
        columns=columns,
        events=events,
        metadata_keys=tuple(raw["metadata"]),
        sort_key=tuple(raw["sort_key"]),
    )


def _arrow_schema(spec: TraceSpec) -> pa.Schema:
    return pa.schema(
        [pa.field(c.name, c.arrow_type, nullable=not c.required) for c in spec.columns]
    )


TRACE_FORMAT: str = load_spec().format
SCHEMA: pa.Schema = _arrow_schema(load_spec())
