"""Pairing each `recv` with the datagram it observes (spec "Pairing"): per socket queue, by payload
when the `recv` has one, and one wrong delivery is one mismatch, however the sockets are drained."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tracekit.kernel.socket_layer.pairing import DROPPED, UNPLACED, Pairing

FLOW = ("127.0.0.1", 9000, "127.0.0.1", 40000)


def verdicts(pairing: Pairing, events, complete: bool = True) -> list[str]:
    """Replay `events` (("arrive", predicted, payload) / ("recv", sk, payload)) through `pairing`;
    the verdict of every decision, deferred ones and (with `complete`) unreceived ones last."""
    out: list[str] = []

    def judge(predicted, observed):
        if predicted is UNPLACED:
            return "unknown"
        return "match" if predicted == observed else "mismatch"

    for n, (kind, value, payload) in enumerate(events):
        if kind == "arrive":
            pairing.arrive(FLOW, value, (n, value), payload)
            continue
        seen = pairing.observe(FLOW, value, payload, token=value)
        if not seen.deferred:
            out.append(judge(seen.item[1], value) if seen.item is not None else "lost")
    for sk, item in pairing.settle():
        out.append(judge(item[1], sk) if item is not None else "lost")
    if complete:
        out.extend(judge(item[1], DROPPED) for _flow, item in pairing.unreceived())
    return out


def arrive(predicted, payload=None):
    return ("arrive", predicted, payload)


def recv(sk, payload=None):
    return ("recv", sk, payload)


def test_sockets_drained_in_the_other_order_all_match():
    events = [arrive(2), arrive(1), arrive(2), arrive(1), recv(1), recv(1), recv(2), recv(2)]
    assert verdicts(Pairing(), events) == ["match"] * 4


def test_global_fifo_would_have_paired_across_sockets():
    """The k-th recv on a socket takes the k-th datagram the model put there, not the flow's oldest."""
    p = Pairing()
    for n, predicted in enumerate((2, 1)):
        p.arrive(FLOW, predicted, n)
    assert p.observe(FLOW, 1).item == 1
    assert p.observe(FLOW, 2).item == 0


def test_one_wrong_delivery_is_one_mismatch_whichever_socket_reads_first():
    # the kernel put the second datagram on 2, the model on 1
    for events in (
        [arrive(1), arrive(1), arrive(2), recv(1), recv(2), recv(2)],
        [arrive(1), arrive(1), arrive(2), recv(2), recv(2), recv(1)],
        [arrive(1), recv(1), arrive(1), recv(2), arrive(2), recv(2)],
    ):
        assert sorted(verdicts(Pairing(), events)) == ["match", "match", "mismatch"], events


def test_deferred_recv_gives_up_a_datagram_its_owner_reads():
    """Three sockets: a recv on 3 that nothing the model put on 3 explains first holds the oldest
    datagram (the model's 1); when 1 reads it, the recv on 3 takes the 2's instead."""
    events = [arrive(1), arrive(2), recv(3), recv(1)]
    assert sorted(verdicts(Pairing(), events)) == ["match", "mismatch"]


def test_a_deferred_recv_trades_along_a_sockets_matches():
    """The kernel put the third datagram (the model's 0) on 1. The recv on 1 first holds the 2's
    datagram; when 2 reads, the recv on 1 takes the 0's datagram from the second recv on 0, which
    takes the next from the third, which takes the last: every recv keeps an older datagram."""
    events = [arrive(0), arrive(2), arrive(0), recv(0), recv(1), arrive(0), recv(0), arrive(0),
              recv(0), recv(2)]
    assert sorted(verdicts(Pairing(), events)) == ["match"] * 4 + ["mismatch"]


def test_a_deferred_recv_prefers_a_datagram_the_model_placed_to_one_it_dropped():
    """With complete observations a dropped datagram nobody reads is a match; a deferred recv
    that must give up its datagram takes another the model put on a socket, if an exchange
    finds one, before a dropped one."""
    events = [arrive(0), recv(0), arrive(DROPPED), arrive(DROPPED), arrive(2), arrive(1), recv(0),
              arrive(1), recv(1), recv(2)]
    assert sorted(verdicts(Pairing(), events)) == ["match"] * 5 + ["mismatch"]


def test_payload_names_the_datagram():
    p = Pairing()
    p.arrive(FLOW, 1, "a", b"a")
    p.arrive(FLOW, 1, "b", b"b")
    assert p.observe(FLOW, 1, b"b").item == "b"
    # a payload naming a datagram the model put elsewhere is a mismatch at once, not deferred
    p.arrive(FLOW, 2, "c", b"c")
    assert p.observe(FLOW, 1, b"c").item == "c"
    assert p.observe(FLOW, 1, b"a").item == "a"
    assert list(p.unreceived()) == []


def test_unplaced_datagrams_are_unknown_and_a_recv_without_datagram_is_lost():
    assert verdicts(Pairing(), [arrive(UNPLACED), recv(1), recv(1)]) == ["unknown", "lost"]


def test_dropped_then_delivered_elsewhere():
    """With complete observations a recv holding a datagram the model dropped swaps it for one
    the model delivered and nobody received: the trace needs one mismatch, not two."""
    events = [arrive(DROPPED), arrive(2), recv(1)]
    assert sorted(verdicts(Pairing(), events)) == ["match", "mismatch"]


def test_forgets_a_flow_once_paired():
    p = Pairing()
    p.arrive(FLOW, 1, "x")
    p.observe(FLOW, 1)
    assert p.flows == {}


@st.composite
def drained(draw, sockets=st.integers(2, 4), drops: bool = False):
    """A flow's datagrams on `n` sockets as the kernel queued them (or dropped them: -1), the
    model agreeing except on `wrong` of them, read back in a random interleaving that keeps each
    socket's queue order."""
    n = draw(sockets)
    count = draw(st.integers(1, 12))
    lowest = -1 if drops else 0
    truth = draw(st.lists(st.integers(lowest, n - 1), min_size=count, max_size=count))
    wrong = draw(st.sets(st.integers(0, count - 1), max_size=1))
    predicted = list(truth)
    for i in wrong:
        predicted[i] = draw(st.sampled_from([s for s in range(lowest, n) if s != truth[i]]))
    queues: list[list[int]] = [[] for _ in range(n)]
    events, sent = [], 0
    while sent < count or any(queues):
        ready = [s for s in range(n) if queues[s]]
        if sent < count and (not ready or draw(st.booleans())):
            if truth[sent] >= 0:
                queues[truth[sent]].append(sent)
            events.append(arrive(predicted[sent]))
            sent += 1
        else:
            s = draw(st.sampled_from(ready))
            queues[s].pop(0)
            events.append(recv(s))
    return events, len(wrong)


@settings(max_examples=300, deadline=None)
@given(drained(sockets=st.integers(2, 5), drops=True))
def test_any_drain_order_gives_exactly_the_wrong_deliveries(case):
    """With complete observations (a datagram nobody read was dropped), whatever the order the
    sockets are drained in, the mismatches are the deliveries the model got wrong."""
    events, wrong = case
    out = verdicts(Pairing(), events)
    assert out.count("mismatch") == wrong, events
    assert out.count("lost") == 0
