"""What every report reads from a replay: the summary, and the decisions when they are at hand.

Renderers take a `Replay` (anything with a ``summary`` dict and, optionally, a ``decisions``
DataFrame) or a bare summary dict, as loaded back from a ``--json`` file. The summary alone carries
the counts, the groups and the first mismatches; the decision table, when present, adds every
mismatch and the unknown reasons per group. A `Replay` keeps every mismatch and unknown but the
matches only when it was run with ``results=True``; `ReportView.complete` tells which.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tracekit.report.membership import group_frames

__all__ = [
    "ReportView",
    "view_of",
    "format_sk",
    "format_endpoint",
    "format_flow",
    "describe_decision",
    "ordered_load",
    "count_reasons",
    "rank_counts",
    "busiest_gone",
    "split_groups",
    "GROUPS_DETAILED",
]

_RECORD_FIELDS = (
    "host", "seq", "event", "laddr", "lport", "raddr", "rport", "sk", "group",
    "reuseport_id", "expected", "observed", "verdict", "reason", "explanation", "baseline",
)


@dataclass(frozen=True)
class ReportView:
    """A replay seen by a report: the summary dict plus the decision table, if any."""

    summary: Mapping[str, Any]
    decisions: Any = None  # pandas.DataFrame of decision records, or None
    timeline: Any = None  # pandas.DataFrame of membership changes (`Replay.timeline()`), or None
    ends: Mapping[str, int] | None = None  # the last seq replayed on each host
    membership: Any = None  # the replay's `Timeline`, read group by group (`group_timelines`)

    def group_timelines(self, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], Any]:
        """The timeline rows (a DataFrame each) of the groups `keys` ((host, group) pairs) that
        have any: from `timeline` when given, else from `membership`, making the rows of those
        groups alone (a report details 40 groups of a 600-host fleet's 3,000)."""
        keys = list(keys)
        if self.timeline is not None or self.membership is None:
            return group_frames(self.timeline, only=keys)
        from tracekit.replay.timeline import timeline_frame

        return group_frames(timeline_frame(self.membership, only=keys), only=keys)

    @property
    def complete(self) -> bool:
        """True when the decision table holds every decision, matches included."""
        return self.decisions is not None and len(self.decisions) == int(self.summary.get("decisions", 0))

    @property
    def verdict(self) -> str:
        return str(self.summary.get("verdict", "unknown"))

    def mismatches(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Mismatch records in (host, seq) order; all of them when the decision table is present.
        Against a baseline, the new ones come first, each record tagged `baseline` new/known."""
        baseline = self.summary.get("baseline")
        if self.decisions is None:
            records = [dict(record) for record in self.summary.get("mismatches", [])]
            if baseline is not None:
                new = [dict(r, baseline="new") for r in baseline.get("new_mismatches", [])]
                seen = {(r["host"], r["seq"]) for r in new}
                # every new one is listed unless more than the summary keeps
                rest = "known" if len(new) == int(baseline.get("new", 0)) else None
                records = new + [dict(r, baseline=rest) for r in records
                                 if (r["host"], r["seq"]) not in seen]
        else:
            records = self._records(self.decisions["verdict"] == "mismatch")
            if baseline is not None:
                records.sort(key=lambda r: r.get("baseline") != "new")
        return records if limit is None else records[:limit]

    def group_records(self, host: str, group: str, verdict: str) -> list[dict[str, Any]] | None:
        """The records of one group with one verdict, or None when they are not all known.

        Without the decision table only mismatches are known, and only the first ones; matches
        are known only when the table is complete.
        """
        if self.decisions is None:
            if verdict != "mismatch":
                return None
            return [
                dict(record) for record in self.summary.get("mismatches", [])
                if record.get("host") == host and record.get("group") == group
            ]
        if verdict == "match" and not self.complete:
            return None
        table = self.decisions
        mask = (table["host"] == host) & (table["group"] == group) & (table["verdict"] == verdict)
        return self._records(mask)

    def _records(self, mask: Any) -> list[dict[str, Any]]:
        table = self.decisions.loc[mask]
        columns = [name for name in _RECORD_FIELDS if name in table.columns]
        table = table.sort_values(["host", "seq"], kind="stable") if len(table) else table
        return [
            {name: _plain(value) for name, value in zip(columns, row)}
            for row in table[columns].itertuples(index=False, name=None)
        ]


def view_of(replay: Any) -> ReportView:
    """A `ReportView` of a `Replay`, a `ReportView`, or a summary dict."""
    if isinstance(replay, ReportView):
        return replay
    if isinstance(replay, Mapping):
        return ReportView(summary=replay)
    summary = getattr(replay, "summary", None)
    if not isinstance(summary, Mapping):
        raise TypeError(f"cannot report on {type(replay).__name__}: it has no summary dict")
    membership = getattr(replay, "membership", None)
    if membership is None:
        return ReportView(summary=summary, decisions=getattr(replay, "decisions", None))
    return ReportView(summary=summary, decisions=getattr(replay, "decisions", None),
                      ends=dict(membership.last_seq), membership=membership)


def _plain(value: Any) -> Any:
    """A pandas/numpy cell as a plain Python value; missing values become None."""
    if value is None:
        return None
    item = getattr(value, "item", None)
    if callable(item) and not isinstance(value, (str, bytes)):
        value = item()
    if isinstance(value, float) and math.isnan(value):
        return None
    if type(value).__name__ in ("NAType", "NaTType"):
        return None
    return value


def format_sk(sk: Any) -> str:
    """``sk 7``; ``none`` for -1 (no socket: dropped or reset); ``?`` when not known."""
    if sk is None:
        return "?"
    if int(sk) < 0:
        return "none"
    return f"sk {int(sk)}"


def format_endpoint(addr: Any, port: Any) -> str:
    if addr is None and port is None:
        return "?"
    text = "?" if addr is None else str(addr)
    if ":" in text:
        text = f"[{text}]"
    return text if port is None else f"{text}:{int(port)}"


def format_flow(record: Mapping[str, Any]) -> str:
    """``10.0.0.2:40000 -> 127.0.0.1:8080`` (remote to local), or '' for a record without a flow."""
    if all(record.get(name) is None for name in ("laddr", "lport", "raddr", "rport")):
        return ""
    remote = format_endpoint(record.get("raddr"), record.get("rport"))
    local = format_endpoint(record.get("laddr"), record.get("lport"))
    return f"{remote} -> {local}"


def describe_decision(record: Mapping[str, Any]) -> str:
    """One line naming a decision and its outcome.

    ``h1 seq 42 accept 10.0.0.2:40000 -> 127.0.0.1:8080: expected sk 7, observed sk 5``
    """
    flow = format_flow(record)
    where = f"{record.get('host')} seq {record.get('seq')} {record.get('event')}"
    if flow:
        where += f" {flow}"
    outcome = f"expected {format_sk(record.get('expected'))}, observed {format_sk(record.get('observed'))}"
    return f"{where}: {outcome}"


def ordered_load(group: Mapping[str, Any]) -> list[tuple[int, int, str]]:
    """(sk, decisions expected on it, section) for a group, in the group's array order.

    Live sockets first ("live"), then the closed section ("closed"), then sockets that have left
    the group but took decisions earlier ("gone"), by id.
    """
    load = {int(sk): int(n) for sk, n in (group.get("load") or {}).items()}
    rows: list[tuple[int, int, str]] = []
    seen: set[int] = set()
    for section, socks in (("live", group.get("socks") or []), ("closed", group.get("closed") or [])):
        for sk in socks:
            rows.append((int(sk), load.get(int(sk), 0), section))
            seen.add(int(sk))
    rows.extend((sk, n, "gone") for sk, n in sorted(load.items()) if sk not in seen)
    return rows


GONE_SHOWN = 10
GROUPS_DETAILED = 24


def split_groups(groups: Sequence[Mapping[str, Any]], limit: int = GROUPS_DETAILED
                 ) -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]]]:
    """The groups a report details (the first `limit`, and every group with a mismatch) and
    those it sums up one line each, so that a fleet of hundreds of groups stays readable."""
    detailed, rest = [], []
    for index, group in enumerate(groups):
        (detailed if index < limit or int(group.get("mismatched", 0)) else rest).append(group)
    return detailed, rest


def busiest_gone(rows: list[tuple[int, int, str]], shown: int = GONE_SHOWN) -> tuple[list, list]:
    """`ordered_load` rows without all but the `shown` busiest sockets that left the group (a
    long replay can have thousands), and the rows left out."""
    gone = sorted((row for row in rows if row[2] == "gone"), key=lambda row: (-row[1], row[0]))
    if len(gone) <= shown:
        return rows, []
    kept = {row[0] for row in gone[:shown]}
    return [row for row in rows if row[2] != "gone" or row[0] in kept], gone[shown:]


def count_reasons(records: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """How many records carry each reason, most frequent first, then by name."""
    return rank_counts(Counter(str(record.get("reason")) for record in records))


def rank_counts(counts: Mapping[str, Any]) -> dict[str, int]:
    """Counts by name, largest first, ties by name."""
    return dict(sorted(((name, int(n)) for name, n in counts.items()), key=lambda item: (-item[1], item[0])))
