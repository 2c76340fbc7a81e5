"""Baselines: mismatches a team has accepted (`tracekit-baseline/1`), and matching a replay's
mismatches against them. Pure: text in, text out; the API layer reads and writes the files.

A divergence is known by what survives re-recording, re-normalizing or splitting a trace, not by
its `seq`: the host, the event, the flow's 4-tuple (laddr, lport, raddr, rport) and its
occurrence, the how-many-th row of that event for that flow on that host (0 for the first). A
decision without a flow (a kernel-layer call's return value, a selection of a probe that did not
record addresses) is known by its socket `sk` instead of the flow.

The file is JSON, one divergence per line, sorted, so a change to a baseline reads as a line diff::

    {
      "format": "tracekit-baseline/1",
      "divergences": [
        {"event": "accept", "expected": 3, "group": "tcp 127.0.0.1:9000", "host": "h1", ...},
        ...
      ]
    }
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from tracekit.errors import TracekitError

__all__ = ["BASELINE_FORMAT", "Identity", "BaselineError", "BaselineMatch", "identity_of",
           "occurrences", "dump_baseline", "parse_baseline", "match_baseline"]

BASELINE_FORMAT = "tracekit-baseline/1"
_FLOW = ("laddr", "lport", "raddr", "rport")
IDENTITY_FIELDS = ("host", "event", "laddr", "lport", "raddr", "rport", "sk", "occurrence")
# kept with each divergence for the reader; not part of its identity
NOTE_FIELDS = ("group", "expected", "observed", "reason")


class BaselineError(TracekitError):
    """A baseline file that is not `tracekit-baseline/1`: the message names the file and entry."""


@dataclass(frozen=True)
class Identity:
    """Who a divergence is: host, event, flow (or `sk` when there is none) and occurrence."""

    host: str
    event: str
    laddr: str | None
    lport: int | None
    raddr: str | None
    rport: int | None
    sk: int | None
    occurrence: int

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in IDENTITY_FIELDS}

    def sort_key(self) -> tuple:
        return tuple((value is None, "" if value is None else value)
                     for value in (self.host, self.event, self.laddr, self.lport, self.raddr,
                                   self.rport, self.sk, self.occurrence))


def _has_flow(record: Mapping[str, Any]) -> bool:
    return any(record.get(name) is not None for name in _FLOW)


def flow_key(record: Mapping[str, Any]) -> tuple:
    """(host, event, laddr, lport, raddr, rport, sk): what `occurrence` counts within."""
    if _has_flow(record):
        return (record["host"], record["event"], *(record.get(n) for n in _FLOW), None)
    return (record["host"], record["event"], None, None, None, None, record.get("sk"))


def identity_of(record: Mapping[str, Any], occurrence: int) -> Identity:
    host, event, laddr, lport, raddr, rport, sk = flow_key(record)
    return Identity(str(host), str(event), laddr, None if lport is None else int(lport), raddr,
                    None if rport is None else int(rport), None if sk is None else int(sk),
                    int(occurrence))


def occurrences(batches: Iterable[pa.RecordBatch],
                targets: Iterable[Mapping[str, Any]]) -> dict[tuple[str, int], int]:
    """For each target decision, keyed by (host, seq): how many rows of the trace before it have
    the same host, event and flow (or `sk`). `batches` are the trace's rows in (host, seq) order
    with at least the columns host, seq, event, sk and the flow."""
    targets = list(targets)
    wanted = {(str(t["host"]), int(t["seq"])) for t in targets}
    if not wanted:
        return {}
    keys = {flow_key(t) for t in targets}
    events = pa.array(sorted({k[1] for k in keys}))
    rports = pa.array(sorted({k[5] for k in keys if k[5] is not None}), pa.int32())
    sks = pa.array(sorted({k[6] for k in keys if k[6] is not None}), pa.int64())
    cut = all(k[5] is not None or k[6] is not None for k in keys)
    seen: Counter = Counter()
    found: dict[tuple[str, int], int] = {}
    for batch in batches:
        event = batch.column("event")
        if pa.types.is_dictionary(event.type):
            event = event.cast(pa.string())
        mask = pc.is_in(event, value_set=events)
        if cut:  # a cheap first cut: the flows' remote ports, or the sockets of flowless targets
            near = pc.or_(pc.is_in(batch.column("rport").cast(pa.int32()), value_set=rports),
                          pc.is_in(batch.column("sk").cast(pa.int64()), value_set=sks))
            mask = pc.and_(mask, pc.fill_null(near, False))
        rows = pc.filter(batch, mask)
        if not rows.num_rows:
            continue
        for record in rows.select(["host", "seq", "event", "sk", *_FLOW]).to_pylist():
            key = flow_key(record)
            if key not in keys:
                continue
            where = (str(record["host"]), int(record["seq"]))
            if where in wanted:
                found[where] = seen[key]
            seen[key] += 1
    return found


def _entry(record: Mapping[str, Any], identity: Identity) -> dict[str, Any]:
    entry = identity.as_dict()
    entry.update({name: record.get(name) for name in NOTE_FIELDS})
    return entry


def dump_baseline(records: Iterable[Mapping[str, Any]],
                  occurrence: Mapping[tuple[str, int], int]) -> bytes:
    """The `tracekit-baseline/1` text accepting every record (mismatch decisions) given:
    sorted, one divergence per line, byte-identical for the same mismatches."""
    entries = sorted(
        ((identity_of(r, occurrence[(str(r["host"]), int(r["seq"]))]), r) for r in records),
        key=lambda pair: pair[0].sort_key())
    lines = [json.dumps(_entry(r, identity), sort_keys=True, ensure_ascii=False,
                        separators=(", ", ": "))
             for identity, r in entries]
    body = ",\n".join(f"    {line}" for line in lines)
    divergences = f"[\n{body}\n  ]" if lines else "[]"
    return (f'{{\n  "format": "{BASELINE_FORMAT}",\n  "divergences": {divergences}\n}}\n'
            ).encode("utf-8")


def parse_baseline(text: str | bytes, source: str = "baseline") -> dict[Identity, dict[str, Any]]:
    """The divergences of a `tracekit-baseline/1` text, by identity (BaselineError if it is not
    one, naming `source` and the entry)."""
    try:
        document = json.loads(text)
    except (ValueError, UnicodeDecodeError) as err:
        raise BaselineError(f"{source}: not JSON ({err})") from None
    if not isinstance(document, dict) or document.get("format") != BASELINE_FORMAT:
        found = document.get("format") if isinstance(document, dict) else None
        raise BaselineError(f"{source}: not a {BASELINE_FORMAT} file (format={found!r})")
    divergences = document.get("divergences")
    if not isinstance(divergences, list):
        raise BaselineError(f"{source}: 'divergences' must be a list")
    known: dict[Identity, dict[str, Any]] = {}
    for number, entry in enumerate(divergences):
        known[_identity_of_entry(entry, f"{source}: divergence {number}")] = entry
    return known


def _identity_of_entry(entry: Any, where: str) -> Identity:
    if not isinstance(entry, dict):
        raise BaselineError(f"{where}: not an object")
    for name in ("host", "event"):
        if not isinstance(entry.get(name), str):
            raise BaselineError(f"{where}: '{name}' must be a string")
    for name in ("laddr", "raddr"):
        if entry.get(name) is not None and not isinstance(entry[name], str):
            raise BaselineError(f"{where}: '{name}' must be a string or null")
    for name in ("lport", "rport", "sk", "occurrence"):
        value = entry.get(name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            raise BaselineError(f"{where}: '{name}' must be a non-negative integer or null")
    if entry.get("occurrence") is None:
        raise BaselineError(f"{where}: 'occurrence' is required")
    return identity_of(entry, entry["occurrence"])


@dataclass(frozen=True)
class BaselineMatch:
    """A replay's mismatches against a baseline: each mismatch is `known` or `new`; `fixed` are
    the baseline's divergences that no longer occur."""

    known: list[tuple[Identity, dict[str, Any]]]
    new: list[tuple[Identity, dict[str, Any]]]
    fixed: list[tuple[Identity, dict[str, Any]]]

    def status(self) -> dict[tuple[str, int], str]:
        """`known` or `new` per mismatch, keyed by (host, seq)."""
        return {(str(r["host"]), int(r["seq"])): label
                for label, part in (("known", self.known), ("new", self.new)) for _, r in part}


def match_baseline(records: Iterable[Mapping[str, Any]],
                   occurrence: Mapping[tuple[str, int], int],
                   known: Mapping[Identity, Mapping[str, Any]]) -> BaselineMatch:
    """Split mismatch `records` into known and new (in the order given), and list the baseline
    entries no record matched as fixed (in identity order)."""
    hits: set[Identity] = set()
    known_part, new_part = [], []
    for record in records:
        identity = identity_of(record, occurrence[(str(record["host"]), int(record["seq"]))])
        if identity in known:
            hits.add(identity)
            known_part.append((identity, dict(record)))
        else:
            new_part.append((identity, dict(record)))
    fixed = sorted(((i, dict(e)) for i, e in known.items() if i not in hits),
                   key=lambda pair: pair[0].sort_key())
    return BaselineMatch(known_part, new_part, fixed)

