"""Check a Perfetto trace against Perfetto's own schema (`perfetto.protos`, from the `perfetto`
package) and the rules trace processor applies to track events: every event names a declared
track, slices nest on each track, flows start and end, time never goes back on a sequence.

Perfetto's trace processor proper is a native binary that the `perfetto` package downloads on
first use; where it can be had (`TRACE_PROCESSOR_SHELL`, or already in the package's cache),
`load_with_trace_processor` queries the file with it as well.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from perfetto.protos.perfetto.trace.perfetto_trace_pb2 import Trace, TrackEvent


@dataclass
class Checked:
    tracks: dict[int, tuple[str, int | None]] = field(default_factory=dict)  # uuid -> (name, parent)
    slices: dict[int, list[tuple[str, int, int]]] = field(default_factory=lambda: defaultdict(list))
    instants: dict[int, list[tuple[str, int, tuple[str, ...], dict]]] = field(
        default_factory=lambda: defaultdict(list))
    flows: int = 0

    def uuid(self, *path: str) -> int:
        """The track at a path of names from a root, e.g. ("host h1", "tcp ...", "sk 3")."""
        parent = None
        for name in path:
            parent = next(u for u, (n, p) in self.tracks.items() if n == name and p == parent)
        return parent


def check_trace(path: Path) -> Checked:
    trace = Trace()
    trace.ParseFromString(Path(path).read_bytes())
    out = Checked()
    open_slices: dict[int, list[tuple[str, int]]] = defaultdict(list)
    flows_started, flows_ended = Counter(), Counter()
    last_ts = -1
    for packet in trace.packet:
        assert packet.trusted_packet_sequence_id == 1
        if packet.HasField("track_descriptor"):
            d = packet.track_descriptor
            assert d.uuid not in out.tracks, f"track {d.uuid} declared twice"
            parent = d.parent_uuid if d.HasField("parent_uuid") else None
            assert parent is None or parent in out.tracks, f"parent of {d.name} not declared first"
            out.tracks[d.uuid] = (d.name, parent)
            continue
        assert packet.HasField("track_event"), packet
        event = packet.track_event
        assert packet.timestamp >= last_ts, "time went back on the sequence"
        last_ts = packet.timestamp
        assert event.track_uuid in out.tracks, f"event on undeclared track {event.track_uuid}"
        stack = open_slices[event.track_uuid]
        if event.type == TrackEvent.TYPE_SLICE_BEGIN:
            stack.append((event.name, packet.timestamp))
        elif event.type == TrackEvent.TYPE_SLICE_END:
            assert stack, f"slice end without begin on {out.tracks[event.track_uuid]}"
            name, begin = stack.pop()
            out.slices[event.track_uuid].append((name, begin, packet.timestamp))
        else:
            assert event.type == TrackEvent.TYPE_INSTANT, event
            args = {a.name: (a.string_value if a.HasField("string_value") else a.int_value)
                    for a in event.debug_annotations}
            out.instants[event.track_uuid].append((event.name, packet.timestamp,
                                                   tuple(event.categories), args))
        flows_started.update(event.flow_ids)
        flows_ended.update(event.terminating_flow_ids)
    assert not any(open_slices.values()), "slices left open"
    assert flows_started == flows_ended, "a flow without its end"
    out.flows = sum(flows_started.values())
    return out


def trace_processor_binary() -> str | None:
    """A trace_processor_shell that runs here, or None (the package cannot download one)."""
    explicit = os.environ.get("TRACE_PROCESSOR_SHELL")
    if explicit and os.access(explicit, os.X_OK):
        return explicit
    cache = Path.home() / ".local" / "share" / "perfetto" / "prebuilts"
    found = sorted(cache.glob("trace_processor_shell*")) if cache.is_dir() else []
    found = [p for p in found if not p.name.endswith(".tmp") and os.access(p, os.X_OK)]
    return str(found[0]) if found else None


def load_with_trace_processor(path: Path, binary: str) -> dict[str, int]:
    from perfetto.trace_processor import TraceProcessor, TraceProcessorConfig

    tp = TraceProcessor(trace=str(path), config=TraceProcessorConfig(bin_path=binary))
    try:
        tracks = tp.query("select count(*) as n from track").as_pandas_dataframe()["n"][0]
        slices = tp.query("select count(*) as n from slice").as_pandas_dataframe()["n"][0]
        return {"tracks": int(tracks), "slices": int(slices)}
    finally:
        tp.close()
