"""The membership history's and the timeline's hooks around a row that names one socket, in one
pass.

The faithful hooks (`GroupHistory.before`/`after`, `Timeline.before`/`after`, which
`Engine.row` calls for every other membership row, and for all of them with `ONE_PASS` off)
each read every group an event may touch, before and after it. A row naming one socket touches
one group at most: the group its socket is in before the row or, if none, the one it is in
after. `OnePass.before` reads that group once (its members, and its label: the timeline names a
group the row frees by the label it had), `OnePass.after` reads it once more and records what
changed in both, as the faithful hooks would. A row whose socket ends in another group than it
began in takes the faithful hooks after the fact, from what `before` read.

Nothing reads the timeline while a row runs but the migrations of a stopping listener
(`close`, `shutdown`: `Timeline.migrations` records the changes up to them first), so only those
rows open the timeline's pending event before the model runs (`Timeline.begin`); for the others
the faithful hooks' `Timeline.before` comes to the same thing called after the row, with the
label read before it.
"""

from __future__ import annotations

from tracekit.kernel.sock import Sock
from tracekit.kernel.sock_reuseport import SockReuseport
from tracekit.replay.history import NO_MEMBERS, Members, members
from tracekit.replay.state import HostState
from tracekit.replay.timeline import Timeline

__all__ = ["ONE_PASS", "STOPS", "OnePass"]

ONE_PASS = True
"""Record the hooks of one-socket membership rows in one pass (False: the faithful hooks, which
the tests compare against)."""

STOPS = frozenset({"close", "shutdown"})
"""Rows that may stop a listener, whose migrations read the timeline while the row runs."""

Token = tuple[SockReuseport, Members, "str | None"] | None
"""What `before` read: the socket's group, its members and label (None: in no group)."""


class OnePass:
    """The hooks of one engine (its timeline, None when not kept)."""

    def __init__(self, timeline: Timeline | None) -> None:
        self.timeline = timeline

    def before(self, hs: HostState, s: Sock, seq: int, event: str, sk: int | None) -> Token:
        """The group of `s` before the row (`GroupHistory.before`, `Timeline.before`)."""
        reuse = s.sk_reuseport_cb
        timeline = self.timeline
        if reuse is None:
            if timeline is not None and event in STOPS:
                timeline.begin(hs.name, {}, seq, event, sk, hs.host.label_of)
            return None
        now = members(reuse)
        if timeline is None:
            return reuse, now, None
        label = hs.host.label_of(reuse)
        if event in STOPS:
            rid = reuse.reuseport_id
            timeline.begin(hs.name, {rid: (reuse, label, timeline.shared(hs.name, rid, now))},
                           seq, event, sk, hs.host.label_of)
        return reuse, now, label

    def after(self, hs: HostState, token: Token, s: Sock, seq: int, event: str,
              sk: int | None) -> None:
        """Record what the row changed in the group of `s` (`GroupHistory.after`,
        `Timeline.after`)."""
        group = s.sk_reuseport_cb
        if token is not None and group is not None and group is not token[0]:
            self._faithful(hs, token, s, seq, event, sk)
            return
        timeline = self.timeline
        pending = timeline.take() if timeline is not None and event in STOPS else None
        if token is None:
            if group is None:
                return
            old = None
        else:
            group, old, before_label = token
        host = hs.host
        new = members(group)
        label = host.label_of(group)
        rid = group.reuseport_id
        freed = not (group.num_socks + group.num_closed_socks)
        hs.history.record(rid, old[0] if old is not None else None, new[0], freed, label, seq,
                          event, sk)
        if timeline is None:
            return
        if old is None:  # (`Timeline.after`: a group the row's socket joined)
            last = timeline.last.get((hs.name, rid))
            before_label, old = last if last is not None else (None, NO_MEMBERS)
        elif pending is not None:  # (as the migrations left it)
            _reuse, before_label, old = pending.groups[rid]
        else:
            old = timeline.shared(hs.name, rid, old)
        timeline.record(hs.name, rid, before_label, old, new, label, freed, seq, event, sk)

    def _faithful(self, hs: HostState, token: Token, s: Sock, seq: int, event: str,
                  sk: int | None) -> None:
        """The faithful hooks after a row that moved `s` from the group of `token` to another:
        what calling them around it records (nothing read the timeline in between but the
        migrations of a `STOPS` row, which saw the event `before` opened)."""
        group, now, label = token  # type: ignore[misc]
        host, timeline, rid = hs.host, self.timeline, group.reuseport_id
        if timeline is not None and event not in STOPS:
            timeline.begin(hs.name, {rid: (group, label, timeline.shared(hs.name, rid, now))},
                           seq, event, sk, host.label_of)
        after = hs.history.after({rid: (group, now)}, [s], host.label_of, seq, event, sk)
        if timeline is not None:
            timeline.after([s], after)
