"""The summary dict (`Replay.summary`, the `--json` file): versioned, keys sorted, stable."""

from __future__ import annotations

from typing import Any

from tracekit.kernel.socket_layer.selection import prog_label
from tracekit.replay.balance import balance_of, mismatches_by_group, observed_load
from tracekit.replay.sink import DecisionSink

RESULT_FORMAT = "tracekit-result/1"


def _counts(c: list[int]) -> dict[str, int]:
    return {"decisions": c[0], "matched": c[1], "mismatched": c[2], "unknown": c[3]}


def overall_verdict(counts: list[int]) -> str:
    if counts[2]:
        return "mismatch"
    if counts[1]:
        return "match"
    return "unknown-only" if counts[3] else "empty"


def build_summary(sink: DecisionSink, *, profile: dict[str, str], trace: dict[str, Any]) -> dict:
    groups = []
    mismatches = mismatches_by_group(sink.kept)
    for (host, label), stats in sorted(sink.groups.items()):
        reuse = stats.reuse
        live = [s.sk_id for s in reuse.live()] if reuse is not None else []
        groups.append({
            "host": host, "group": label, "reuseport_id": stats.reuseport_id, "proto": stats.proto,
            **_counts(stats.counts),
            "socks": live,
            "closed": [s.sk_id for s in reuse.closed()] if reuse is not None else [],
            "prog": prog_label(reuse),
            "load": dict(sorted(stats.load.items())),
            "migrations": dict(stats.migrations),
            "resets": stats.resets,
            "balance": balance_of(observed_load(stats.load, mismatches.get((host, label), ())), live),
        })
    return {
        "format": RESULT_FORMAT,
        "verdict": overall_verdict(sink.totals),
        **_counts(sink.totals),
        "profile": dict(profile),
        "trace": trace,
        "hosts": {h: _counts(c) for h, c in sorted(sink.hosts.items())},
        "groups": groups,
        "unknown_reasons": dict(sorted(sink.unknown_reasons.items())),
        "mismatches": [d.as_dict() for d in sink.first_mismatches],
    }
