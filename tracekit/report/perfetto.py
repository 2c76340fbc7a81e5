"""A trace and its replay as a Perfetto trace (the `perfetto.protos.Trace` protobuf, written by
hand: no protobuf library needed), for the Perfetto UI (ui.perfetto.dev) or trace processor.

Tracks: one per host, under it one per reuseport group, under each group one per socket. On a
socket's track a slice per stretch of time the socket held one slot (``slot 2``; ``closed
section``), an instant per decision the kernel gave it (named by the event: ``accept``,
``reuseport_select_sock``, ...; category = verdict) and per other trace event about it (``bind``,
``close``, ...). A mismatch is also an instant ``MISMATCH expected sk X, observed sk Y`` on its
group's track, with the flow, reason and explanation as arguments; decisions that reached no
socket (a reset, a drop) sit on the group's track. Each migrated connection is a flow arrow from
the stopped listener to the socket that took it.

Time is seq: one event of the trace is 1 µs (timestamp = seq * 1000 ns), so the UI's time axis
reads in seq. Packets are written in time order, track descriptors first; the same inputs give
the same bytes.
"""

from __future__ import annotations

import heapq
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["export_perfetto", "write_perfetto", "PerfettoExport", "NS_PER_SEQ", "DECISION_EVENTS"]

NS_PER_SEQ = 1000
SEQUENCE_ID = 1
DECISION_EVENTS = ("accept", "recv", "reset", "datagram", "reuseport_select_sock",
                   "reuseport_migrate_sock")
"""Rows that are decisions (shown from the replay's decision records); with `syn`, which the
decision of its accept stands for, these are not repeated as trace events."""
_NOT_TRACE_INSTANTS = set(DECISION_EVENTS) | {"syn"}

# TrackEvent.Type
SLICE_BEGIN, SLICE_END, INSTANT = 1, 2, 3


# -- protobuf wire format ------------------------------------------------------------------------
def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _tag(field: int, wire: int) -> bytes:
    return _varint(field << 3 | wire)


def _uint(field: int, n: int) -> bytes:
    return _tag(field, 0) + _varint(n)


def _bytes(field: int, payload: bytes) -> bytes:
    return _tag(field, 2) + _varint(len(payload)) + payload


def _str(field: int, text: str) -> bytes:
    return _bytes(field, text.encode("utf-8"))


def _fixed64(field: int, n: int) -> bytes:
    return _tag(field, 1) + n.to_bytes(8, "little")


def _sint_as_int64(n: int) -> int:
    return n & 0xFFFFFFFFFFFFFFFF  # int64 on the wire: two's complement in a 10-byte varint


def _annotation(name: str, value: int | str) -> bytes:
    """DebugAnnotation {name = 10; int_value = 4 | string_value = 6}."""
    body = _str(10, name)
    body += _uint(4, _sint_as_int64(value)) if isinstance(value, int) else _str(6, value)
    return _bytes(4, body)  # TrackEvent.debug_annotations = 4


_PACKET = _tag(1, 2)  # Trace.packet = 1
_SEQ = _uint(10, SEQUENCE_ID)  # TracePacket.trusted_packet_sequence_id = 10


def _packet(body: bytes) -> bytes:
    return _PACKET + _varint(len(body)) + body


def _track_descriptor(uuid: int, name: str, parent: int | None, rank: int) -> bytes:
    body = _uint(1, uuid) + _str(2, name)  # uuid = 1, name = 2
    if parent is not None:
        body += _uint(5, parent)  # parent_uuid = 5
    body += _uint(11, 3)  # child_ordering = EXPLICIT: children by sibling_order_rank
    body += _uint(12, min(rank, 2**31 - 1))  # sibling_order_rank = 12 (int32)
    flags = _uint(13, 1) if uuid == 1 else b""  # sequence_flags = INCREMENTAL_STATE_CLEARED
    return _packet(_bytes(60, body) + _SEQ + flags)  # TracePacket.track_descriptor = 60


def _event(ts: int, track: int, kind: int, name: str | None = None, categories: Iterable[str] = (),
           annotations: bytes = b"", flow: int | None = None, ends_flow: int | None = None) -> bytes:
    """TracePacket {timestamp = 8; track_event = 11 {type = 9; track_uuid = 11; name = 23;
    categories = 22; debug_annotations = 4; flow_ids = 47; terminating_flow_ids = 48}}."""
    event = _uint(9, kind) + _uint(11, track)
    if name is not None:
        event += _str(23, name)
    for category in categories:
        event += _str(22, category)
    event += annotations
    if flow is not None:
        event += _fixed64(47, flow)
    if ends_flow is not None:
        event += _fixed64(48, ends_flow)
    return _packet(_uint(8, ts) + _SEQ + _bytes(11, event))


# -- what goes on which track --------------------------------------------------------------------
@dataclass(frozen=True)
class PerfettoExport:
    """What `write_perfetto` wrote."""

    path: Path
    packets: int
    hosts: int
    groups: int
    sockets: int
    decisions: int
    mismatches: int
    migrations: int


class _Tracks:
    """Track uuids, assigned in sorted order so that the output is deterministic."""

    def __init__(self) -> None:
        self.host: dict[str, int] = {}
        self.group: dict[tuple[str, str], int] = {}
        self.socket: dict[tuple[str, int], int] = {}
        self.descriptors: list[bytes] = []

    def build(self, groups: dict[tuple[str, str], None], sockets: dict[tuple[str, int], str | None],
              hosts: Iterable[str]) -> None:
        uuid = 1
        all_hosts = sorted(set(hosts) | {h for h, _ in groups} | {h for h, _ in sockets})
        for rank, host in enumerate(all_hosts):
            self.host[host] = uuid
            self.descriptors.append(_track_descriptor(uuid, f"host {host}", None, rank))
            uuid += 1
        for rank, (host, group) in enumerate(sorted(groups)):
            self.group[(host, group)] = uuid
            self.descriptors.append(_track_descriptor(uuid, group, self.host[host], rank))
            uuid += 1
        for (host, sk), group in sorted(sockets.items()):
            parent = self.group.get((host, group)) if group is not None else None
            self.socket[(host, sk)] = uuid
            self.descriptors.append(_track_descriptor(uuid, f"sk {sk}", parent or self.host[host],
                                                      sk))
            uuid += 1


def _column(batch: pa.RecordBatch | pa.Table, name: str) -> list[Any]:
    return batch.column(name).to_pylist() if name in batch.schema.names else [None] * batch.num_rows


def _flow_text(laddr: Any, lport: Any, raddr: Any, rport: Any) -> str | None:
    if laddr is None and raddr is None:
        return None
    return f"{raddr}:{rport} -> {laddr}:{lport}"


def _trace_rows(path: Path) -> Iterator[tuple[str, int, str, int | None]]:
    """(host, seq, event, sk) of every trace row that is not a decision (or a syn)."""
    from tracekit.trace import iter_batches

    for batch in iter_batches(path, columns=["host", "seq", "event", "sk"]):
        events = batch.column("event")
        if pa.types.is_dictionary(events.type):
            events = events.cast(pa.string())
        keep = pc.invert(pc.is_in(events, value_set=pa.array(sorted(_NOT_TRACE_INSTANTS))))
        table = pa.Table.from_batches([batch]).filter(keep)
        if table.num_rows:
            yield from zip(table.column("host").cast(pa.string()).to_pylist(),
                           table.column("seq").to_pylist(),
                           table.column("event").cast(pa.string()).to_pylist(),
                           table.column("sk").to_pylist())


def write_perfetto(replay: Any, output: str | os.PathLike[str], *,
                   trace: str | os.PathLike[str] | None = None,
                   results: str | os.PathLike[str] | None = None) -> PerfettoExport:
    """Write a `Replay` and every decision of it as a Perfetto trace at `output`.

    The decisions come from `results`, the Parquet file `replay(..., results=PATH)` wrote, or
    else from the Replay itself, which must then have been run with ``results=True``. `trace`,
    the replayed trace, adds its other events (binds, closes, sysctls, ...) as instants."""
    import pyarrow.parquet as pq

    from tracekit.trace.output import atomic_path

    if results is not None:
        def batches() -> Iterator[pa.RecordBatch]:
            yield from pq.ParquetFile(results).iter_batches(batch_size=65_536)

        decisions = pq.read_table(results, columns=["host", "group", "observed", "sk", "reason"])
    elif replay.results is not None:
        def batches() -> Iterator[pa.RecordBatch]:
            yield from replay.results

        decisions = pa.Table.from_batches(replay.results) if replay.results else None
    else:
        raise ValueError("write_perfetto needs every decision: replay with results=True, or "
                         "pass the results file")
    timeline = replay.membership.table() if replay.membership is not None else None
    trace_rows = list(_trace_rows(Path(trace))) if trace is not None else []

    groups: dict[tuple[str, str], None] = {}
    sockets: dict[tuple[str, int], str | None] = {}
    if timeline is not None:
        for host, group, sk in zip(*(timeline.column(c).to_pylist() for c in ("host", "group", "sk"))):
            groups[(host, group)] = None
            sockets.setdefault((host, sk), group)
    if decisions is not None and decisions.num_rows:
        targets = decisions.select(["host", "group"]).append_column("target",
                                                                     pa.array(_target(decisions)))
        for host, group, sk in _unique(targets, ("host", "group", "target")):
            if group is not None:
                groups[(host, group)] = None
            if sk is not None and sk >= 0:
                sockets.setdefault((host, sk), group)
    for host, _seq, _event, sk in trace_rows:
        if sk is not None:
            sockets.setdefault((host, sk), None)
    tracks = _Tracks()
    tracks.build(groups, sockets, replay.summary.get("hosts", {}))

    counts = {"decisions": 0, "mismatches": 0, "migrations": 0, "packets": 0}
    # each stream is in (host, ts) order and merged stably: at one (host, ts) the slot slices
    # change first, then come the trace's other events, then the decisions
    streams = [
        _membership_events(timeline, tracks, replay.membership.last_seq if replay.membership else {},
                           counts),
        _trace_events(trace_rows, tracks),
        _decision_events(batches(), tracks, counts, _boundaries(timeline, trace_rows, tracks)),
    ]
    path = Path(output)
    packets = 0
    with atomic_path(path) as tmp, open(tmp, "wb") as out:
        for descriptor in tracks.descriptors:
            out.write(descriptor)
            packets += 1
        for _key, blob in heapq.merge(*streams, key=itemgetter(0)):
            out.write(blob)
            packets += 1
    packets += counts.pop("packets")
    return PerfettoExport(path=path, packets=packets, hosts=len(tracks.host), groups=len(tracks.group),
                          sockets=len(tracks.socket), **counts)


def _boundaries(timeline: pa.Table | None, trace_rows: list[tuple], tracks: _Tracks) -> np.ndarray:
    """Sorted (host rank << 42 | seq) of every event of the membership and trace streams."""
    ranks = {host: i for i, host in enumerate(sorted(tracks.host))}
    keys = [ranks[h] << 42 | s for h, s, _e, _sk in trace_rows]
    if timeline is not None:
        keys += [ranks[h] << 42 | s for h, s in zip(timeline.column("host").to_pylist(),
                                                     timeline.column("seq").to_pylist())]
    return np.unique(np.array(keys, dtype=np.int64))


def _unique(table: pa.Table, columns: tuple[str, ...]) -> list[tuple]:
    grouped = table.select(list(columns)).group_by(list(columns)).aggregate([])
    return sorted(zip(*(grouped.column(c).to_pylist() for c in columns)),
                  key=lambda row: tuple((v is None, v) for v in row))


def _membership_events(timeline: pa.Table | None, tracks: _Tracks, last_seq: dict[str, int],
                       counts: dict[str, int]) -> Iterator[tuple[tuple[str, int], bytes]]:
    """Slot slices per socket, and a flow per migrated connection; sorted by (host, ts, rank)."""
    if timeline is None or not timeline.num_rows:
        return
    names = ("host", "seq", "sk", "change", "to_slot", "to_sk", "flow")
    rows = zip(*(timeline.column(c).to_pylist() for c in names))
    open_slices: dict[tuple[str, int], str] = {}
    flow_id = 0
    current_host = None

    def close_all(host: str) -> Iterator[tuple[tuple[str, int], bytes]]:
        end = (last_seq.get(host, 0) + 1) * NS_PER_SEQ
        for key in sorted(k for k in open_slices if k[0] == host):
            del open_slices[key]
            yield (host, end), _event(end, tracks.socket[key], SLICE_END)

    for host, seq, sk, change, to_slot, to_sk, flow in rows:
        if host != current_host and current_host is not None:
            yield from close_all(current_host)
        current_host = host
        ts = seq * NS_PER_SEQ
        key = (host, sk)
        track = tracks.socket[key]
        if change in ("migrated", "reset", "migration-unknown"):
            counts["migrations"] += 1
            annotations = _annotation("flow", flow) if flow else b""
            if change == "migrated" and (host, to_sk) in tracks.socket:
                flow_id += 1
                yield (host, ts), _event(ts, track, INSTANT, f"migrate -> sk {to_sk}",
                                                   ("migration",), annotations, flow=flow_id)
                yield (host, ts), _event(ts, tracks.socket[(host, to_sk)], INSTANT,
                                                   f"migrated from sk {sk}", ("migration",),
                                                   annotations, ends_flow=flow_id)
            else:
                yield (host, ts), _event(ts, track, INSTANT, change, ("migration",),
                                                   annotations)
            continue
        if key in open_slices:
            del open_slices[key]
            yield (host, ts), _event(ts, track, SLICE_END)
        name = {"closed": "closed section", "left": None}.get(change, f"slot {to_slot}")
        if name is not None:
            open_slices[key] = name
            yield (host, ts), _event(ts, track, SLICE_BEGIN, name, ("membership",))
    if current_host is not None:
        yield from close_all(current_host)


_DETAIL = ("expected", "observed", "reason", "explanation", "laddr", "lport", "raddr", "rport")


def _decision_events(batches: Iterable[pa.RecordBatch], tracks: _Tracks, counts: dict[str, int],
                     boundaries: np.ndarray) -> Iterator[tuple[tuple[str, int], bytes]]:
    """An instant per decision, on the observed socket's track (else its group's or host's); a
    mismatch also on its group's track, with its details as arguments.

    Matches carry no arguments, so they are encoded a run at a time with NumPy (`_match_run`);
    a run never straddles a (host, seq) `boundaries` key of the other streams, so the merged
    output stays in time order."""
    ranks = {host: i for i, host in enumerate(sorted(tracks.host))}
    bodies: dict[tuple, int] = {}
    body_bytes: list[bytes] = []
    for batch in batches:
        n = batch.num_rows
        counts["decisions"] += n
        if not n:
            continue
        hosts = _codes(batch, "host")
        events, groups, verdicts = (_codes(batch, c) for c in ("event", "group", "verdict"))
        seqs = batch.column("seq").to_numpy(zero_copy_only=False).astype(np.int64)
        observed = _target(batch)
        host_rank = np.array([ranks[h] for h in hosts[1]], dtype=np.int64)[hosts[0]]
        keys = (host_rank << 42) | seqs
        match = verdicts[0] == (verdicts[1].index("match") if "match" in verdicts[1] else -1)
        # one body id per (host, event, group, observed)
        combo = np.stack([hosts[0], events[0], groups[0], observed], axis=1)
        uniq, inverse = np.unique(combo, axis=0, return_inverse=True)
        ids = np.empty(len(uniq), dtype=np.int64)
        for j, (h, e, g, o) in enumerate(uniq.tolist()):
            host, group = hosts[1][h], groups[1][g] if g >= 0 else None
            k = (host, events[1][e], group, o)
            if k not in bodies:
                bodies[k] = len(body_bytes)
                body_bytes.append(_bytes(11, _uint(9, INSTANT) + _uint(11, _track_of(
                    tracks, host, group, None if o < 0 else o)) + _str(23, events[1][e]) +
                    _str(22, "match")))
            ids[j] = bodies[k]
        body_id = ids[inverse.reshape(-1)]
        segment = np.searchsorted(boundaries, keys, side="right")
        starts = np.flatnonzero(np.concatenate([[True], (segment[1:] != segment[:-1]) |
                                                (hosts[0][1:] != hosts[0][:-1]) | ~match[1:] |
                                                ~match[:-1]]))
        stops = np.append(starts[1:], n)
        detail = None
        for a, b in zip(starts.tolist(), stops.tolist()):
            host = hosts[1][hosts[0][a]]
            ts = int(seqs[a]) * NS_PER_SEQ
            if match[a]:
                yield (host, ts), _match_run(seqs[a:b] * NS_PER_SEQ, body_id[a:b], body_bytes)
                counts["packets"] += b - a - 1  # one blob, b - a packets
                continue
            if detail is None:
                detail = {c: _column(batch, c) for c in _DETAIL + ("event", "group", "verdict")}
            yield from _other_decision(host, ts, int(observed[a]), a, detail, tracks, counts)


def _target(batch: pa.RecordBatch | pa.Table) -> np.ndarray:
    """The socket whose track shows each decision: the one the kernel chose, or for a `ret`
    decision (a call's return value, not a socket) the socket that made the call; -1: none."""
    observed = pc.fill_null(batch.column("observed"), -1)
    sk = pc.fill_null(batch.column("sk"), -1)
    is_ret = pc.fill_null(pc.equal(batch.column("reason"), "ret"), False)
    return pc.if_else(is_ret, sk, observed).to_numpy(zero_copy_only=False).astype(np.int64)


def _codes(batch: pa.RecordBatch, name: str) -> tuple[np.ndarray, list[Any]]:
    """A string column as (indices, values); null is index -1."""
    column = batch.column(name)
    if not pa.types.is_dictionary(column.type):
        column = pc.dictionary_encode(column)
    indices = column.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    return indices, column.dictionary.to_pylist()


def _match_run(ts: np.ndarray, body_id: np.ndarray, body_bytes: list[bytes]) -> bytes:
    """Packets `TracePacket{timestamp; trusted_packet_sequence_id; track_event = body}` for a run
    of matched decisions, encoded at once: [0x0a, len, 0x40, varint(ts), 0x50, 0x01, body]."""
    ts = ts.astype(np.uint64)
    nb = np.ones(len(ts), dtype=np.int64)
    for k in range(1, 10):
        nb += ts >= np.uint64(1 << (7 * k))
    lens = np.array([len(b) for b in body_bytes], dtype=np.int64)[body_id]
    inner = 1 + nb + len(_SEQ) + lens
    if inner.max() >= 128:  # a one-byte length no longer holds: encode them one by one
        return b"".join(_PACKET + _varint(int(i)) + _uint(8, int(t)) + _SEQ + body_bytes[b]
                        for t, i, b in zip(ts.tolist(), inner.tolist(), body_id.tolist()))
    size = 2 + inner
    offsets = np.concatenate([[0], np.cumsum(size)[:-1]])
    buf = np.empty(int(size.sum()), dtype=np.uint8)
    buf[offsets] = _PACKET[0]
    buf[offsets + 1] = inner
    buf[offsets + 2] = 0x40  # field 8, varint
    for k in range(int(nb.max())):
        rows = nb > k
        byte = (ts[rows] >> np.uint64(7 * k)) & np.uint64(0x7F)
        more = (nb[rows] - 1 > k).astype(np.uint64) << np.uint64(7)
        buf[offsets[rows] + 3 + k] = (byte | more).astype(np.uint8)
    at = offsets + 3 + nb
    buf[at] = _SEQ[0]
    buf[at + 1] = _SEQ[1]
    at += 2
    for b in np.unique(body_id).tolist():
        rows = body_id == b
        body = np.frombuffer(body_bytes[b], dtype=np.uint8)
        buf[at[rows][:, None] + np.arange(len(body))] = body
    return buf.tobytes()


def _other_decision(host: str, ts: int, target: int, i: int, detail: dict[str, list],
                    tracks: _Tracks, counts: dict[str, int]) -> Iterator[tuple[tuple[str, int], bytes]]:
    event, group, verdict, expected, obs, reason, explanation = (
        detail[c][i] for c in ("event", "group", "verdict", "expected", "observed", "reason",
                               "explanation"))
    flow = _flow_text(*(detail[c][i] for c in ("laddr", "lport", "raddr", "rport")))
    annotations = (_annotation("expected", int(expected)) + _annotation("observed", int(obs)) +
                   _annotation("reason", str(reason)) +
                   (_annotation("flow", flow) if flow else b"") +
                   (_annotation("explanation", explanation) if explanation else b""))
    yield (host, ts), _event(ts, _track_of(tracks, host, group, target), INSTANT, event, (verdict,),
                             annotations)
    if verdict == "mismatch":
        counts["mismatches"] += 1
        yield (host, ts), _event(ts, _track_of(tracks, host, group, None), INSTANT,
                                 f"MISMATCH {event} returned {obs}, model {expected}"
                                 if reason == "ret" else
                                 f"MISMATCH expected {_sk(expected)}, observed {_sk(obs)}",
                                 ("mismatch",), annotations)


def _track_of(tracks: _Tracks, host: str, group: str | None, sk: int | None) -> int:
    """The socket's track, else the group's, else the host's."""
    if sk is not None and sk >= 0 and (host, sk) in tracks.socket:
        return tracks.socket[(host, sk)]
    if group is not None and (host, group) in tracks.group:
        return tracks.group[(host, group)]
    return tracks.host[host]


def _sk(sk: Any) -> str:
    return "none" if sk is None or sk < 0 else f"sk {sk}"


def _trace_events(rows: list[tuple[str, int, str, int | None]],
                  tracks: _Tracks) -> Iterator[tuple[tuple[str, int], bytes]]:
    for host, seq, event, sk in rows:
        ts = seq * NS_PER_SEQ
        track = tracks.socket.get((host, sk)) if sk is not None else None
        yield (host, ts), _event(ts, track or tracks.host[host], INSTANT, event,
                                           ("trace",))


def export_perfetto(trace: str | os.PathLike[str], output: str | os.PathLike[str], *,
                    profile: str = "auto", policies: dict[str, Any] | None = None) -> PerfettoExport:
    """Replay `trace` (keeping every decision) and write it with its replay as a Perfetto trace
    at `output` (see the module docstring for the tracks). `tracekit export --perfetto`."""
    from tracekit.replay.api import replay
    from tracekit.trace.output import remove_path, scratch_path

    results = scratch_path(Path(output), ".results.parquet")  # every decision, memory kept flat
    try:
        result = replay(trace, profile=profile, policies=policies, results=results)
        return write_perfetto(result, output, trace=trace, results=results)
    finally:
        remove_path(results)
