"""Hold a probe trace against the recordings made while it ran (the recorder is the witness).

The recorder observes where each connection and datagram went (`accept`, `recv`, `reset`, its own
socket ids); the probe saw the kernel choose (`reuseport_select_sock`, `reuseport_migrate_sock`,
the kernel's sockets as probe ids). Each recording ran in its own network namespace, which is
one probe host: the host whose selections carry the recording's flows.

One for one: the k-th observation of a flow pairs with the k-th selection of that flow in the
probe (then the migrations of that connection, if its listener closed); across all pairs, each
probe socket must stand for exactly one recorder socket and the other way round, and a reset
must be a failed (or absent) migration. Flows the recorder re-sends after the scenario (to
re-probe hashes) come later in the probe and are not paired.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import pandas as pd

FLOW = ["laddr", "lport", "raddr", "rport"]


def _flow(row) -> tuple:
    return (str(row.laddr), int(row.lport), str(row.raddr), int(row.rport))


@dataclass
class Pairing:
    host: str
    pairs: list[tuple[int, int, tuple]] = field(default_factory=list)  # (probe sk, recorder sk, flow)
    unpaired: list[tuple] = field(default_factory=list)  # observations without a probe selection
    conflicts: list[str] = field(default_factory=list)
    skipped_connected: int = 0

    def check(self) -> None:
        probe_to: dict[int, set[int]] = defaultdict(set)
        rec_to: dict[int, set[int]] = defaultdict(set)
        for p, r, _flow_ in self.pairs:
            probe_to[p].add(r)
            rec_to[r].add(p)
        for p, rs in probe_to.items():
            if len(rs) > 1:
                self.conflicts.append(f"probe sk {p} stands for recorder sockets {sorted(rs)}")
        for r, ps in rec_to.items():
            if len(ps) > 1:
                self.conflicts.append(f"recorder sk {r} stands for probe sockets {sorted(ps)}")


def host_of(probe: pd.DataFrame, recording: pd.DataFrame) -> str:
    """The probe host whose selections carry most of the recording's flows."""
    observed = {_flow(r) for r in recording[recording.event.isin(["accept", "recv", "reset"])].itertuples()}
    selects = probe[probe.event == "reuseport_select_sock"].dropna(subset=FLOW)
    counts: dict[str, int] = defaultdict(int)
    for r in selects.itertuples():
        if _flow(r) in observed:
            counts[r.host] += 1
    if not counts:
        raise AssertionError("no probe host carries the recording's flows")
    return max(counts, key=counts.get)


def pair(probe: pd.DataFrame, recording: pd.DataFrame) -> Pairing:
    host = host_of(probe, recording)
    rows = probe[probe.host == host]
    picks: dict[tuple, list[int]] = defaultdict(list)  # flow -> chosen socket of each selection
    for r in rows.itertuples():
        if pd.isna(r.laddr) or pd.isna(r.observed):
            continue
        flow = _flow(r)
        if r.event == "reuseport_select_sock":
            picks[flow].append(int(r.observed))
        elif r.event == "reuseport_migrate_sock" and picks[flow]:
            picks[flow][-1] = int(r.observed)  # the connection moved on (or was reset: -1)
    connected = set(recording[recording.event == "connect"].sk.dropna().astype(int))
    result = Pairing(host)
    seen: dict[tuple, int] = defaultdict(int)
    for r in recording[recording.event.isin(["accept", "recv", "reset"])].itertuples():
        flow = _flow(r)
        k = seen[flow]
        seen[flow] += 1
        rec_sk = -1 if r.event == "reset" else int(r.sk)
        if rec_sk in connected:
            result.skipped_connected += 1  # a connected UDP socket: exact match, no selection
            continue
        if k >= len(picks.get(flow, ())):
            result.unpaired.append((r.event, flow))
            continue
        probe_sk = picks[flow][k]
        if (probe_sk < 0) != (rec_sk < 0):
            result.conflicts.append(f"{flow}: probe chose {probe_sk}, recorder saw {r.event} {rec_sk}")
        elif rec_sk >= 0:
            result.pairs.append((probe_sk, rec_sk, flow))
    result.check()
    return result


def migrations(probe: pd.DataFrame, host: str) -> int:
    """Migrations that found a listener, in `host`."""
    rows = probe[(probe.host == host) & (probe.event == "reuseport_migrate_sock")]
    return int((rows.observed >= 0).sum())
