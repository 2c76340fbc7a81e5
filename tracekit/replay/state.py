"""What the engine and its walks share: each host's model with its history, the group snapshots
bulk selections read, and the seam (`Faithful`) through which a walk asks the engine for the
faithful per-row path.

A walk (`tracekit.replay.walk`, `tracekit.replay.stretch`) decides what it can in bulk and hands
every other row to `Faithful.row`; it never reaches into the engine otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from tracekit.kernel.sock_reuseport import SockReuseport
from tracekit.kernel.socket_layer import Host
from tracekit.replay import fast
from tracekit.replay.history import GroupHistory, HistoryView
from tracekit.replay.sink import DecisionSink

__all__ = ["Faithful", "HostState", "Snapshot"]


@dataclass(eq=False)
class Snapshot:
    """One group (or a socket outside any group) as bulk selections see it until it changes."""

    reuse: SockReuseport | None
    state: fast.GroupState | None
    label: str
    history: HistoryView
    mark: int
    forced: bool  # a program decides: every row one by one
    walk: int = -1  # the `Walk` that last tagged rows with it
    index: int = -1  # position among that walk's snapshots
    restate: bool = False  # a row changed a member's state (not the group's membership or label)

    def restated(self) -> Snapshot:
        """The group now, after rows that changed only its members' `sk_state` or
        `sk_incoming_cpu` (and its `incoming_cpu` count): what `Faithful.snapshot` would make,
        with this one's label, history and program, which such rows leave alone."""
        return Snapshot(self.reuse, fast.GroupState.of(self.reuse) if self.reuse is not None
                        else None, self.label, self.history, self.mark, self.forced)


@dataclass
class HostState:
    """One trace host: its model, the membership history explanations cite, its snapshots."""

    name: str
    host: Host
    history: GroupHistory = field(default_factory=GroupHistory)
    snapshots: dict[Any, Snapshot] = field(default_factory=dict)  # id(reuse) or ("sk", id)
    routes: dict[Any, Any] = field(default_factory=dict)  # socket-layer routes (replay.stretch)
    ports: dict[Any, Any] = field(default_factory=dict)  # UDP lookups memoized (replay.ports)
    classic: dict[Any, Any] = field(default_factory=dict)  # classic programs' answers (stretch)


class Faithful(Protocol):
    """The seam between a walk and the engine: the faithful path, one row at a time.

    A walk calls `row` for every row it does not decide in bulk, in the order the per-row path
    would have met it (the model then stands where the per-row path would have left it);
    `snapshot` and `late_select` serve bulk kernel-layer selections, `observe` socket-layer
    observations paired by the host after the fact; decisions the walk makes itself go to
    `sink` with their input row index, which orders them.
    """

    sink: DecisionSink
    explain_all: bool

    def row(self, hs: HostState, row: dict[str, Any], index: int) -> None:
        """Replay input row `index` (a dict of the trace's columns) through the model."""

    def snapshot(self, hs: HostState, s: Any, reuse: SockReuseport | None) -> Snapshot:
        """The group `reuse` (None: the socket `s` outside any group) as selections see it now."""

    def observe(self, hs: HostState, row: dict[str, Any], index: int,
                history: HistoryView | None = None) -> None:
        """Observation row `index` (`accept`, `recv`, `reset`) through the host's pairing (the
        one place observations are paired) and decided; `history`: the group's history when
        its arrival was decided, for a row replayed after the model has moved on."""

    def decide(self, hs: HostState, row: dict[str, Any], index: int, exp: Any,
               observed: int) -> None:
        """Observation row `index` (its `seq`, `event`, flow and `sk`), which the walk paired
        through the host's pairing itself (`exp`: the host's `Expectation`), decided."""

    def late_select(self, hs: HostState, snap: Snapshot, row: dict[str, Any], index: int) -> None:
        """Decide bulk selection row `index` one by one on `snap`, its group as it was then."""
