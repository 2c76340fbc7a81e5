"""Pairing each `recv` with the datagram it observes, the way the kernel queues them.

The kernel queues a datagram on one socket, and an application reads its sockets in whatever order
it likes, so the only order a trace promises is per socket: the k-th `recv` of a flow on socket S
observes the k-th datagram of that flow that reached S (spec, "Pairing"). Replay knows where the
model put each datagram, not where the kernel did, so a `recv` on S is paired with

1. the datagram its `payload` names, when it has one and a waiting datagram carries the same bytes;
2. else the oldest waiting datagram of the flow the model put on S (a match);
3. else the oldest waiting datagram the model could not place (an unknown);
4. else one the model put on S that an earlier `recv` holds and can exchange (below);
5. else one the model put elsewhere or dropped: a mismatch. Which one is not certain until more of
   the trace is read, so the `recv` is *deferred*: it holds the oldest such datagram and is
   decided by `settle()` at the end, with the datagram it holds then.

An exchange keeps every `recv` on a datagram that arrived before it: a deferred `recv` gives up the
datagram it holds for another, and a matched `recv` may trade its datagram for another the model
put on the same socket (its verdict unchanged), a few steps deep. So two sockets drained in either
order give the same verdicts, and one datagram the kernel put on another socket than the model is
one mismatch, not a cascade. Matches are remembered only in a flow with a deferred `recv` (the
newest `MATCHES` of them), which is rare: it takes a mismatch.

    pairing = Pairing()
    pairing.arrive(flow, predicted=3, item=pick, payload=b"...")  # the model put it on sk 3
    seen = pairing.observe(flow, sk=3, payload=None, token=row)   # a recv on sk 3
    seen.item, seen.deferred                                      # the pick, or deferred
    for token, item in pairing.settle(): ...                      # the deferred recvs, decided
    for flow, item in pairing.unreceived(): ...                   # datagrams nobody received

`predicted` is the socket id the model chose, -1 where it dropped the datagram, `UNPLACED` (None)
where it could not decide. `item` and `token` are the caller's (a `Pick`, a row); the order of
calls is the trace's order. Pure, no I/O; `Host` keeps one, and every replay path pairs through it.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Hashable, Iterator, NamedTuple

UNPLACED = None
"""`predicted` of a datagram whose socket the model cannot tell (its verdicts are unknown)."""
DROPPED = -1


class _Arrival:
    __slots__ = ("order", "predicted", "item", "payload")

    def __init__(self, order: int, predicted: int | None, item: Any, payload: bytes | None):
        self.order, self.predicted, self.item, self.payload = order, predicted, item, payload


def _placed(arrival: _Arrival) -> bool:
    return arrival.predicted is not UNPLACED and arrival.predicted >= 0


class _Holder:
    """A `recv` holding a datagram: `deferred` (a mismatch, decided at the end) or a match that
    may still have to trade its datagram for another the model put on socket `sk`."""

    __slots__ = ("order", "sk", "token", "arrival", "deferred")

    def __init__(self, order: int, sk: int, token: Any, arrival: _Arrival | None,
                 deferred: bool):
        self.order, self.sk, self.token, self.arrival = order, sk, token, arrival
        self.deferred = deferred


DEPTH = 64
"""How many exchanges one `recv` may set off (a chain shifts a socket's matches by one)."""
MATCHES = 4096
"""How many matches of a flow with a deferred `recv` are remembered (the newest)."""
_ANY = object()  # no condition on the socket the model put a datagram on


class Observed(NamedTuple):
    """What `observe` paired a `recv` with: the arrival's `item`, or None (no datagram of the flow
    is waiting: the trace lost it), or `deferred` (decided by `settle`). (A named tuple: every
    `recv` makes one.)"""

    item: Any = None
    deferred: bool = False


NOTHING = Observed()
_observed = tuple.__new__
DEFERRED = Observed(deferred=True)


class _Flow:
    """The datagrams of one flow waiting for a `recv`, by the socket the model put them on, and the
    `recv`s that hold one while a deferred `recv` of the flow is open."""

    __slots__ = ("waiting", "size", "deferred", "matched")

    def __init__(self) -> None:
        self.waiting: dict[int | None, deque[_Arrival]] = {}
        self.size = 0
        self.deferred: list[_Holder] = []
        self.matched: deque[_Holder] | None = None  # once the flow has a deferred recv

    def take(self, queue: deque[_Arrival]) -> _Arrival:
        self.size -= 1
        return queue.popleft()

    def remove(self, arrival: _Arrival) -> None:
        self.waiting[arrival.predicted].remove(arrival)
        self.size -= 1

    def put_back(self, arrival: _Arrival) -> None:
        queue = self.waiting.setdefault(arrival.predicted, deque())
        queue.append(arrival)
        self.waiting[arrival.predicted] = deque(sorted(queue, key=lambda a: a.order))
        self.size += 1

    def oldest(self, besides: Any = _ANY, before: int | None = None,
               only: Any = _ANY) -> _Arrival | None:
        """The oldest waiting datagram the model put on a socket other than `besides` (or only on
        `only`), else the oldest it dropped or could not place; of those that arrived before
        `before`."""
        best: _Arrival | None = None
        fallback: _Arrival | None = None
        for predicted, queue in self.waiting.items():
            if not queue or predicted == besides or (only is not _ANY and predicted != only):
                continue
            head = queue[0]
            if before is not None and head.order > before:
                continue
            if _placed(head):
                if best is None or head.order < best.order:
                    best = head
            elif fallback is None or head.order < fallback.order:
                fallback = head
        return best or fallback

    def free(self, before: int, predicted: Any, seen: set[int],
             depth: int) -> tuple[_Arrival, list] | None:
        """A datagram that arrived before `before` (the model put on `predicted`, or any: `_ANY`)
        which can be handed over: a waiting one, or one a `recv` holds and can exchange for
        another (found the same way, `depth` steps deep; `seen`: holders already tried, as in an
        augmenting-path search). Returns it with the exchanges to make."""
        waiting = self.oldest(before=before, only=predicted)
        if waiting is not None and _placed(waiting):
            return waiting, [(None, waiting)]
        # a dropped or unplaced one only if no exchange finds one the model put on a socket:
        # with complete observations a dropped one nobody takes is a match of its own
        found = self._exchange(before, predicted, seen, depth) if depth > 0 else None
        if found is None and waiting is not None:
            return waiting, [(None, waiting)]
        return found

    def _exchange(self, before: int, predicted: Any, seen: set[int],
                  depth: int) -> tuple[_Arrival, list] | None:
        for holder in [*self.deferred, *(self.matched or ())]:
            arrival = holder.arrival
            if (arrival is None or id(holder) in seen or arrival.order > before
                    or (predicted is not _ANY and arrival.predicted != predicted)):
                continue
            seen.add(id(holder))
            # a deferred recv takes anything older than itself; a match keeps its socket
            need = _ANY if holder.deferred else holder.sk
            found = self.free(holder.order, need, seen, depth - 1)
            if found is not None:
                replacement, moves = found
                return arrival, moves + [(holder, replacement)]
        return None

    def hand_over(self, found: tuple[_Arrival, list]) -> _Arrival:
        """Make the exchanges `free` found; returns the datagram it freed."""
        arrival, moves = found
        for holder, replacement in moves:
            if holder is None:
                self.remove(replacement)
            else:
                holder.arrival = replacement
        return arrival

    def by_payload(self, sk: int, payload: bytes) -> _Arrival | None:
        """The waiting (or held) datagram these bytes name: of several, one the model put on `sk`,
        else one it could not place, else the oldest."""
        queue = self.waiting.get(sk)
        if queue and queue[0].payload == payload:  # (`take`, inlined: the common case)
            self.size -= 1
            return queue.popleft()
        found: list[_Arrival] = [a for q in self.waiting.values() for a in q if a.payload == payload]
        if found:
            rank = {sk: 0, UNPLACED: 1}
            chosen = min(found, key=lambda a: (rank.get(a.predicted, 2), a.order))
            self.remove(chosen)
            return chosen
        for holder in [*self.deferred, *(self.matched or ())]:
            arrival = holder.arrival
            if arrival is None or arrival.payload != payload:
                continue
            found_other = self.free(holder.order, _ANY if holder.deferred else holder.sk,
                                    {id(holder)}, DEPTH - 1)
            holder.arrival = self.hand_over(found_other) if found_other is not None else None
            return arrival
        return None


class Pairing:
    """Arrivals and observations of every flow of one host, paired per socket."""

    def __init__(self) -> None:
        self.flows: dict[Hashable, _Flow] = {}
        self.clock = 0

    def arrive(self, flow: Hashable, predicted: int | None, item: Any,
               payload: bytes | None = None) -> None:
        """A datagram of `flow` arrived; the model put it on socket `predicted` (-1: dropped,
        `UNPLACED`: cannot tell)."""
        self.clock += 1
        entry = self.flows.get(flow)
        if entry is None:
            entry = self.flows[flow] = _Flow()
        queue = entry.waiting.get(predicted)
        if queue is None:
            queue = entry.waiting[predicted] = deque()
        queue.append(_Arrival(self.clock, predicted, item, payload))
        entry.size += 1

    def observe(self, flow: Hashable, sk: int, payload: bytes | None = None,
                token: Any = None) -> Observed:
        """A `recv` on socket `sk` read a datagram of `flow` (its bytes: `payload`, if known)."""
        self.clock += 1
        entry = self.flows.get(flow)
        if entry is None:
            return NOTHING
        arrival = entry.by_payload(sk, payload) if payload is not None else None
        if arrival is None:
            arrival = self._own(entry, sk)
            # a match a deferred recv may need to trade with, unless its bytes named it
            if arrival is not None and entry.deferred and arrival.predicted == sk:
                if entry.matched is None:
                    entry.matched = deque(maxlen=MATCHES)
                entry.matched.append(_Holder(self.clock, sk, None, arrival, deferred=False))
        if arrival is not None:
            if not entry.size and not entry.deferred:  # (`_forget_if_done`, inlined)
                del self.flows[flow]
            # (`Observed(arrival.item)` without its `__new__`: every `recv` makes one)
            return _observed(Observed, (arrival.item, False))
        held = entry.oldest(sk)
        if held is None:
            return NOTHING
        entry.remove(held)
        entry.deferred.append(_Holder(self.clock, sk, token, held, deferred=True))
        return DEFERRED

    def _own(self, entry: _Flow, sk: int) -> _Arrival | None:
        for predicted in (sk, UNPLACED):
            queue = entry.waiting.get(predicted)
            if queue:
                return entry.take(queue)
        if not entry.deferred:
            return None
        found = entry.free(self.clock, sk, set(), DEPTH)
        return entry.hand_over(found) if found is not None else None

    def _forget_if_done(self, flow: Hashable, entry: _Flow) -> None:
        if not entry.size and not entry.deferred:
            del self.flows[flow]

    def settle(self) -> list[tuple[Any, Any]]:
        """Decide the deferred `recv`s, in trace order: `(token, item)` with the datagram each
        observed (`item` None: none could have been). A deferred `recv` holding a datagram the
        model dropped takes instead one the model put on a socket and nobody received, when one
        arrived before it: with complete observations that explains the trace with one mismatch
        fewer, and without them it changes nothing but the expected socket."""
        out: list[tuple[int, Any, Any]] = []
        for entry in self.flows.values():
            for held in entry.deferred:
                arrival = held.arrival
                if arrival is None or arrival.predicted == DROPPED:
                    better = entry.oldest(held.sk, before=held.order)
                    if better is not None and (arrival is None or _placed(better)):
                        entry.remove(better)
                        if arrival is not None:
                            entry.put_back(arrival)
                        held.arrival = arrival = better
                out.append((held.order, held.token, arrival.item if arrival is not None else None))
            entry.deferred, entry.matched = [], None
        out.sort(key=lambda t: t[0])
        return [(token, item) for _order, token, item in out]

    def unreceived(self) -> Iterator[tuple[Hashable, Any]]:
        """Datagrams no `recv` observed (after `settle`), in the order they arrived."""
        left = [(a.order, flow, a.item) for flow, entry in self.flows.items()
                for queue in entry.waiting.values() for a in queue]
        left.sort(key=lambda t: t[0])
        return iter([(flow, item) for _order, flow, item in left])


__all__ = ["DEFERRED", "DROPPED", "NOTHING", "Observed", "Pairing", "UNPLACED"]
