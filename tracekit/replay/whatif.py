"""What-if replay: run a trace through the model with one thing changed, and compare what the model
then decides with what the kernel was observed to do.

Changes (`--what-if`, combinable):

    net.ipv4.tcp_migrate_req=1   a sysctl the model reads, pinned for the whole trace (the
                                 trace's own writes of it are ignored)
    profile=6.2                  another kernel behaviour profile
    close=SK@SEQ                 socket SK closed just before the host's row SEQ
    add=SK@SEQ                   a new socket, opened like SK (same protocol, family, address,
                                 port and options; listening if SK listens), just before row SEQ
    (close=HOST:SK@SEQ, add=HOST:SK@SEQ change one host; without HOST, every host)

The model runs the trace free: observations (`accept`, `recv`, `reset`, kernel-layer selections)
are where it reads its own prediction, never what steers it. So a connection queued on a listener
that closes migrates or is reset as the changed model says, and its `reset` or `accept` row later
shows whether the outcome would have differed. Pure: `run_what_if` consumes record batches.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pyarrow as pa

from tracekit.errors import TracekitError
from tracekit.kernel.profiles import Profile, profile_by_name
from tracekit.replay.balance import balance_of, mismatches_by_group, observed_load
from tracekit.replay.decision import Decision
from tracekit.replay.engine import Engine, HostState, _dictionary
from tracekit.replay.sink import RESET_EVENTS, DecisionSink
from tracekit.replay.walk import COLUMNS

__all__ = ["SYSCTLS", "WhatIf", "parse_what_if", "run_what_if", "compare_what_if",
           "ADDED_SK_BASE"]

SYSCTLS = {"net.ipv4.tcp_migrate_req": "sysctl_tcp_migrate_req"}
"""The sysctls the model reads, and the `Net` field each sets."""

ADDED_SK_BASE = 1 << 40
"""Socket ids of sockets a what-if adds: far above any id a trace uses."""

MAX_MOVES = 20
_SOCKET_CHANGE = re.compile(r"^(?:(?P<host>[^:@]+):)?(?P<sk>[0-9]+)@(?P<seq>[0-9]+)$")


@dataclass(frozen=True)
class SocketChange:
    action: str  # "close" or "add"
    sk: int
    seq: int
    host: str | None = None


@dataclass(frozen=True)
class WhatIf:
    """One hypothetical: pinned sysctls, a profile, sockets closed or added."""

    specs: tuple[str, ...] = ()
    sysctls: tuple[tuple[str, int], ...] = ()
    profile: str | None = None
    sockets: tuple[SocketChange, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.specs)


def parse_what_if(specs: Iterable[str]) -> WhatIf:
    """`--what-if` values -> WhatIf (TracekitError naming the spec it cannot read)."""
    specs = tuple(specs)
    sysctls: dict[str, int] = {}
    profile = None
    sockets: list[SocketChange] = []
    for spec in specs:
        name, sep, value = spec.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not value:
            raise TracekitError(f"--what-if {spec!r}: expected NAME=VALUE")
        if name == "profile":
            try:
                profile_by_name(value)
            except ValueError as err:
                raise TracekitError(f"--what-if {spec!r}: {err}") from None
            profile = value
        elif name in ("close", "add"):
            m = _SOCKET_CHANGE.match(value)
            if not m:
                raise TracekitError(f"--what-if {spec!r}: expected {name}=SK@SEQ or {name}=HOST:SK@SEQ")
            sockets.append(SocketChange(name, int(m["sk"]), int(m["seq"]), m["host"]))
        else:
            key = name.replace("/", ".")
            if key not in SYSCTLS:
                raise TracekitError(
                    f"--what-if {spec!r}: the model reads no sysctl {name!r}; it reads "
                    f"{', '.join(SYSCTLS)} (or use profile=, close=, add=)")
            try:
                sysctls[key] = int(value)
            except ValueError:
                raise TracekitError(f"--what-if {spec!r}: {value!r} is not an integer") from None
    return WhatIf(specs, tuple(sorted(sysctls.items())), profile, tuple(sockets))


class WhatIfEngine(Engine):
    """The replay engine with the what-if's sysctls pinned and its socket changes injected."""

    def __init__(self, profile: Profile, policies: dict[str, Callable] | None, *,
                 sink: DecisionSink, what_if: WhatIf) -> None:
        super().__init__(profile, policies, sink=sink)
        self.what_if = what_if
        self.pending = sorted(what_if.sockets, key=lambda c: (c.host or "", c.seq))
        self.done: dict[SocketChange, set[str]] = {c: set() for c in self.pending}  # hosts
        self.applied: list[dict[str, Any]] = []
        self.added = 0

    def _state(self, name: str) -> HostState:
        fresh = name not in self.hosts
        state = super()._state(name)
        if fresh:
            host = state.host
            for key, value in self.what_if.sysctls:
                setattr(host.net, SYSCTLS[key], value)
            pinned = {key for key, _ in self.what_if.sysctls}
            trace_sysctl = host.sysctl

            def sysctl(name: str, value: int) -> None:  # the trace's writes of a pinned sysctl
                if name.replace("/", ".") not in pinned:
                    trace_sysctl(name, value)

            host.sysctl = sysctl  # type: ignore[method-assign]
        return state

    def feed(self, batch: pa.RecordBatch) -> None:
        while self.pending and batch.num_rows:
            cut = self._cut(batch)
            if cut is None:
                break
            index, change, host = cut
            if index:
                super().feed(batch.slice(0, index))
            self.drain()  # every row before the change replayed before it
            self._inject(change, host)
            batch = batch.slice(index)
        super().feed(batch)

    def finish(self, complete: bool) -> None:
        """Changes whose seq lies after their host's last row happen at the end, then what
        only the end settles (`Engine.finish`)."""
        self.drain()
        for change in self.pending:
            for name in [change.host] if change.host else sorted(self.hosts):
                if name in self.hosts and name not in self.done[change]:
                    self._inject(change, name, at_end=True)
        self.pending = []
        self.sink.flush()
        super().finish(complete)

    def _cut(self, batch: pa.RecordBatch) -> tuple[int, SocketChange, str] | None:
        """The first row of `batch` before which a pending change happens: a change naming a
        host happens on that host, one naming none on every host, each at its own row SEQ."""
        hosts = _dictionary(batch.column("host"))
        names = np.array(hosts.dictionary.to_pylist(), dtype=object)[
            hosts.indices.to_numpy(zero_copy_only=False)]
        seqs = batch.column("seq").to_numpy(zero_copy_only=False)
        best: tuple[int, SocketChange, str] | None = None
        for change in self.pending:
            if change.host is not None:
                hit = (names == change.host) & (seqs >= change.seq)
            else:
                hit = (seqs >= change.seq) & ~np.isin(names, list(self.done[change]))
            where = np.flatnonzero(hit)
            if len(where) and (best is None or where[0] < best[0]):
                best = (int(where[0]), change, str(names[where[0]]))
        if best is not None:
            _, change, host = best
            self.done[change].add(host)
            if change.host is not None:
                self.pending.remove(change)
        return best

    def _inject(self, change: SocketChange, host_name: str, at_end: bool = False) -> None:
        hs = self._state(host_name)
        rows = self._rows(hs, change)
        for row in rows:
            self.row(hs, row, -1)
        hs.snapshots.clear()
        self.applied.append({"change": f"{change.action}={change.sk}@{change.seq}",
                             "host": hs.name, "sk": rows[0]["sk"] if rows else change.sk,
                             "at": "end" if at_end else change.seq, "applied": bool(rows)})
        self.sink.flush()

    def _rows(self, hs: HostState, change: SocketChange) -> list[dict[str, Any]]:
        host = hs.host
        if change.sk not in host.socks and change.sk not in host.parked:
            return []
        like = host.sock(change.sk)

        def row(event: str, **values: Any) -> dict[str, Any]:
            return dict.fromkeys(COLUMNS) | {"host": hs.name, "seq": change.seq, "event": event,
                                             **values}

        if change.action == "close":
            return [row("close" if host.bound else "reuseport_detach_sock", sk=change.sk)]
        self.added += 1
        new = ADDED_SK_BASE + self.added
        if not host.bound:
            reuse = like.sk.sk_reuseport_cb
            if reuse is None:
                return []
            return [row("reuseport_add_sock", sk=new, sk2=change.sk,
                        value=int(reuse.bind_inany), proto=like.proto)]
        rows = [row("socket", sk=new, proto=like.proto, family=like.family)]
        options = [("SO_REUSEPORT", int(like.sk.sk_reuseport)), ("IPV6_V6ONLY", int(like.v6only)),
                   ("SO_BINDTODEVICE", like.bound_dev_if)]
        rows += [row("setsockopt", sk=new, name=name, value=value, ret=0)
                 for name, value in options if value]
        if like.lport is not None:
            rows.append(row("bind", sk=new, laddr=str(like.laddr), lport=like.lport, ret=0))
        if like.listening:
            rows.append(row("listen", sk=new, ret=0))
        return rows


def run_what_if(batches: Iterable[pa.RecordBatch], profile: Profile,
                policies: dict[str, Callable] | None, what_if: WhatIf,
                complete: bool) -> tuple[DecisionSink, list[dict[str, Any]]]:
    """Replay `batches` (a trace's rows in (host, seq) order, `walk.COLUMNS`) under `what_if`:
    the sink of its decisions and the socket changes as applied."""
    if what_if.profile is not None:
        profile = profile_by_name(what_if.profile)
    sink = DecisionSink()
    engine = WhatIfEngine(profile, policies, sink=sink, what_if=what_if)
    for batch in batches:
        engine.feed(batch)
    engine.finish(complete)
    engine.register_groups()
    return sink, engine.applied


# -- the comparison ------------------------------------------------------------------------------

_CONNECTION_EVENTS = RESET_EVENTS | {"accept"}


@dataclass
class _Outcomes:
    """Decisions that differ, by kind."""

    counts: Counter = field(default_factory=Counter)
    moves: list[dict[str, Any]] = field(default_factory=list)

    def add(self, kind: str, record: dict[str, Any]) -> None:
        self.counts[kind] += 1
        if len(self.moves) < MAX_MOVES:
            self.moves.append(record | {"change": kind})


def _kind(event: str, observed: int, what_if: int) -> str:
    lost = "reset" if event in _CONNECTION_EVENTS else "dropped"
    if observed < 0 <= what_if:
        return f"{lost}_would_be_delivered" if lost == "dropped" else "reset_would_be_accepted"
    if what_if < 0 <= observed:
        return f"delivered_would_be_{lost}" if lost == "dropped" else "accepted_would_be_reset"
    return "moved_to_another_socket"


def compare_what_if(plain_kept: Sequence[Decision], plain_groups: Sequence[Mapping[str, Any]],
                    what_if: WhatIf, sink: DecisionSink,
                    applied: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The `what_if` section of the summary: what the changed model decides that differs from
    what was observed (`differ`), which of those the change itself moved (the unchanged model
    predicted the observation: `moved`), resets and drops avoided or added, migrations, and the
    load per socket of every group as observed and as the changed model would give it."""
    plain = {(d.host, d.seq, d.event): d for d in plain_kept}
    changed = {(d.host, d.seq, d.event): d for d in sink.kept}
    outcomes = _Outcomes()
    unknown = 0
    moved = 0
    for key in sorted(set(plain) | set(changed), key=lambda k: (k[0], k[1], k[2])):
        before, after = plain.get(key), changed.get(key)
        if after is None:  # the changed model predicted the observation
            moved += before is not None and before.verdict == "mismatch"
            continue
        if after.verdict == "unknown":
            unknown += 1
            continue
        record = {"host": after.host, "seq": after.seq, "event": after.event,
                  "laddr": after.laddr, "lport": after.lport, "raddr": after.raddr,
                  "rport": after.rport, "group": after.group, "observed": after.observed,
                  "what_if": after.expected, "reason": after.reason,
                  "explanation": after.explanation,
                  "model": after.observed if before is None else
                  (None if before.verdict == "unknown" else before.expected)}
        outcomes.add(_kind(after.event, after.observed, after.expected), record)
        moved += record["model"] is not None and record["model"] != after.expected
    counts = outcomes.counts
    groups = _groups(plain_groups, plain_kept, sink)
    return {
        "changes": list(what_if.specs),
        "applied": list(applied),
        "decisions": sink.totals[0],
        "differ": sum(counts.values()),
        "moved": moved,
        "unknown": unknown,
        "outcomes": {kind: counts[kind] for kind in sorted(counts)},
        "resets": {"observed": sum(int(g.get("resets", 0)) for g in plain_groups),
                   "avoided": counts["reset_would_be_accepted"],
                   "added": counts["accepted_would_be_reset"]},
        "migrations": {outcome: sum(g["migrations"][outcome] for g in groups)
                       for outcome in ("migrated", "reset")},
        "groups": groups,
        "moves": outcomes.moves,
    }


def _groups(plain_groups: Sequence[Mapping[str, Any]], plain_kept: Sequence[Decision],
            sink: DecisionSink) -> list[dict[str, Any]]:
    """Per group: load as observed (from the plain replay) and as the changed model gives it."""
    observed = {(g["host"], g["group"]): g for g in plain_groups}
    plain_mismatches = mismatches_by_group(plain_kept)
    mismatches = mismatches_by_group(sink.kept)
    out = []
    for (host, label), stats in sorted(sink.groups.items()):
        reuse = stats.reuse
        live = [s.sk_id for s in reuse.live()] if reuse is not None else []
        seen = observed.get((host, label), {})
        seen_load = observed_load(seen.get("load") or {}, plain_mismatches.get((host, label), ()))
        load = dict(sorted(stats.load.items(), key=lambda kv: int(kv[0])))
        resets = int(seen.get("resets", 0))
        for d in mismatches.get((host, label), ()):
            if d["event"] in _CONNECTION_EVENTS:
                resets += (d["expected"] < 0) - (d["observed"] < 0)
        out.append({
            "host": host, "group": label, "socks": live,
            "observed_load": seen_load, "load": load,
            "balance": balance_of(load, live),
            "migrations": dict(stats.migrations),
            "resets": max(resets, 0),
        })
    return out
