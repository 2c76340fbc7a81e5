"""`DecisionSink.add_match_counts` (matches the socket walk counts per group instead of making a
`Decision` each) against `add` of each match's `Decision`, with other decisions of the same
groups in between: the same counts, load, resets and `reuseport_id` after `flush`."""

from __future__ import annotations

from dataclasses import asdict

from hypothesis import given, settings
from hypothesis import strategies as st

from tracekit.replay.decision import Decision
from tracekit.replay.sink import DecisionSink

GROUPS = ["tcp 127.0.0.1:8000", "udp 0.0.0.0:53", None]

observation = st.fixed_dictionaries({
    "group": st.sampled_from(GROUPS),
    "rid": st.sampled_from([-1, 3, 5, 8]),
    "expected": st.integers(-1, 3),
    "observed": st.integers(-1, 3),
    "event": st.sampled_from(["accept", "recv", "reset"]),
    "unknown": st.sampled_from([None, None, None, "no-hash"]),
})


def decision(host: str, row: int, o: dict) -> Decision:
    """What `Engine._decide` records of observation `o` (no explanation)."""
    observed = -1 if o["event"] == "reset" else o["observed"]
    unknown = o["unknown"]
    verdict = "unknown" if unknown else "match" if o["expected"] == observed else "mismatch"
    return Decision(host=host, seq=row, event=o["event"], laddr="127.0.0.1", lport=8000,
                    raddr="127.0.0.1", rport=row, sk=o["observed"], group=o["group"],
                    reuseport_id=o["rid"] if o["rid"] >= 0 else None, expected=o["expected"],
                    observed=observed, verdict=verdict, reason=unknown or "hash")


def state(sink: DecisionSink) -> tuple:
    groups = {key: (s.reuseport_id, s.proto, s.counts, dict(s.load), s.resets, s.migrations)
              for key, s in sink.groups.items()}
    return (sink.totals, sink.hosts, groups, dict(sink.unknown_reasons),
            [asdict(d) for d in sink.kept], [asdict(d) for d in sink.first_mismatches])


@settings(max_examples=150, deadline=None)
@given(batches=st.lists(st.lists(st.tuples(st.sampled_from(["h1", "h2"]), observation),
                                 max_size=40), min_size=1, max_size=4),
       offset=st.integers(0, 50))
def test_match_counts_are_the_decisions_applied_one_by_one(batches, offset):
    one_by_one, counted = DecisionSink(), DecisionSink()
    for batch in batches:
        tallies: dict[str, dict] = {}
        for row, (host, o) in enumerate(batch, start=offset):
            d = decision(host, row, o)
            one_by_one.add(d, row)
            if d.verdict != "match":
                counted.add(d, row)
                continue
            # as `SocketWalk._observe` counts it (rows relative to the walk's first)
            tally = tallies.setdefault(host, {})
            key = (d.group, o["rid"], d.expected, d.event == "reset")
            entry = tally.setdefault(key, [0, -1])
            entry[0] += 1
            entry[1] = row - offset
        for host, tally in tallies.items():
            counted.add_match_counts(host, tally, offset)
        one_by_one.flush()
        counted.flush()
        assert state(counted) == state(one_by_one)
