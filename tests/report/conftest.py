"""A small replay result, as the report renderers see it: a summary dict and a decision table.

The decisions are written out one by one and the summary is derived from them here, so every count
a test expects comes from the records rather than from a number typed twice.
"""

from __future__ import annotations

import copy
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pandas as pd
import pytest

TCP = "tcp 127.0.0.1:8080"
UDP = "udp [::]:5353"
WEB = "tcp 10.0.0.1:80"

# (host, group, reuseport_id, proto, live socks, closed socks, prog, migrations)
GROUPS = [
    ("h1", TCP, 1, "tcp", [3, 5, 7], [4], None, {"migrated": 1, "reset": 0}),
    ("h1", UDP, 2, "udp", [11, 12], [], "cbpf", {"migrated": 0, "reset": 0}),
    ("h2", WEB, 1, "tcp", [1], [], "ebpf:pick", {"migrated": 0, "reset": 0}),
]


def _decision(host, seq, group, event, expected, observed, verdict, reason, explanation="",
              rport=40000):
    proto, endpoint = group.split(" ", 1)
    laddr, lport = endpoint.rsplit(":", 1)
    return {
        "host": host, "seq": seq, "event": event, "laddr": laddr.strip("[]"), "lport": int(lport),
        "raddr": "10.9.9.9" if proto == "tcp" else "2001:db8::9", "rport": rport,
        "sk": observed if observed >= 0 else None, "group": group,
        "reuseport_id": next(g[2] for g in GROUPS if g[0] == host and g[1] == group),
        "expected": expected, "observed": observed, "verdict": verdict, "reason": reason,
        "explanation": explanation,
    }


DECISIONS = [
    _decision("h1", 10, TCP, "accept", 3, 3, "match", "hash", rport=40001),
    _decision("h1", 12, TCP, "accept", 5, 5, "match", "hash", rport=40002),
    _decision("h1", 14, TCP, "accept", 7, 5, "mismatch", "hash",
              "hash 0x9a3c0001 -> reciprocal_scale(hash, 3) = 2 -> socks[2] is sk 7, which moved "
              "into slot 2 when sk 4 closed at seq 13 -> expected sk 7, observed sk 5", rport=40003),
    _decision("h1", 16, TCP, "accept", 3, 3, "match", "hash", rport=40004),
    _decision("h1", 18, TCP, "accept", 4, 4, "match", "migration", rport=40005),
    _decision("h1", 20, TCP, "reset", 7, -1, "mismatch", "migration",
              "sk 4 closed at seq 19 with tcp_migrate_req=1 -> its queued connection migrates to "
              "sk 7 -> expected sk 7, observed none", rport=40006),
    _decision("h1", 30, UDP, "recv", 11, 11, "match", "cbpf", rport=5001),
    _decision("h1", 31, UDP, "recv", 12, 12, "match", "cbpf", rport=5002),
    _decision("h1", 32, UDP, "recv", -1, 11, "unknown", "cbpf-unknown", rport=5003),
    _decision("h2", 5, WEB, "accept", 1, 1, "match", "ebpf", rport=41000),
    _decision("h2", 6, WEB, "accept", -1, 1, "unknown", "unregistered-prog", rport=41001),
    _decision("h2", 7, WEB, "accept", -1, 1, "unknown", "no-hash", rport=41002),
    _decision("h2", 8, WEB, "accept", -1, 1, "unknown", "no-hash", rport=41003),
]


def _counts(records) -> dict[str, int]:
    verdicts = Counter(record["verdict"] for record in records)
    return {"decisions": len(records), "matched": verdicts["match"],
            "mismatched": verdicts["mismatch"], "unknown": verdicts["unknown"]}


def summarize(decisions: list[dict[str, Any]], max_mismatches: int = 20) -> dict[str, Any]:
    """The summary dict of the brief's format, built from decision records."""
    counts = _counts(decisions)
    verdict = "mismatch" if counts["mismatched"] else "match" if counts["matched"] else "unknown-only"
    groups = []
    for host, group, rid, proto, socks, closed, prog, migrations in GROUPS:
        records = [d for d in decisions if d["host"] == host and d["group"] == group]
        load = Counter(str(d["expected"]) for d in records if d["expected"] >= 0)
        groups.append({
            "host": host, "group": group, "reuseport_id": rid, "proto": proto, **_counts(records),
            "socks": socks, "closed": closed, "prog": prog, "load": dict(sorted(load.items())),
            "migrations": migrations,
        })
    hosts = sorted({d["host"] for d in decisions})
    mismatches = [d for d in decisions if d["verdict"] == "mismatch"][:max_mismatches]
    return {
        "format": "tracekit-result/1", "verdict": verdict, **counts,
        "profile": {"name": "6.1", "chosen_by": "tracekit.kernel=6.18.44"},
        "trace": {"path": "fixtures/recorded/sample.parquet", "format": "tracekit-trace/1",
                  "source": "record", "kernel": "6.18.44",
                  "metadata": {"tracekit.format": "tracekit-trace/1", "tracekit.source": "record",
                               "tracekit.kernel": "6.18.44"}},
        "hosts": {h: _counts([d for d in decisions if d["host"] == h]) for h in hosts},
        "groups": groups,
        "unknown_reasons": dict(Counter(d["reason"] for d in decisions if d["verdict"] == "unknown")),
        "mismatches": copy.deepcopy(mismatches),
    }


@dataclass(frozen=True)
class FakeReplay:
    """Stands in for tracekit.replay.api.Replay: the two attributes reports read."""

    summary: dict[str, Any]
    decisions: pd.DataFrame | None


@pytest.fixture
def decisions() -> list[dict[str, Any]]:
    return copy.deepcopy(DECISIONS)


@pytest.fixture
def summary(decisions) -> dict[str, Any]:
    return summarize(decisions)


@pytest.fixture
def replay(summary, decisions) -> FakeReplay:
    return FakeReplay(summary=summary, decisions=pd.DataFrame(decisions))


@pytest.fixture
def clean_replay() -> FakeReplay:
    records = [d for d in copy.deepcopy(DECISIONS) if d["verdict"] == "match"]
    return FakeReplay(summary=summarize(records), decisions=pd.DataFrame(records))
