"""Explanations a person can follow: the chain from the flow hash to the socket, and the few
earlier events that put the group in that state.

    hash 0x9a3c12f0 -> reciprocal_scale(hash, 4) = 2 -> socks[2] is sk 7, which moved into slot 2
    when sk 3 closed at seq 120 -> expected sk 7, observed sk 5
"""

from __future__ import annotations

from tracekit.kernel.profiles import Profile
from tracekit.kernel.socket_layer.selection import Pick
from tracekit.replay.history import Change, GroupHistory

UNKNOWN_TEXT = {
    "no-hash": "the trace has no flow hash for this selection, and the choice depends on it",
    "no-cpu": "the trace has no CPU for this arrival, and SO_INCOMING_CPU makes the choice depend on it",
    "unregistered-prog": "an eBPF program with no registered policy decides",
    "cbpf-unknown": "the classic BPF program reads bytes the trace lacks",
    "lost-events": "the trace has no syn/datagram event for this flow (events lost in capture)",
    "membership-unknown": "the group was built before the probe started (or while it lost "
                          "events): its membership is unknown",
}

RECENT = 4
VERBS = {"close": "closed", "shutdown": "shut down", "listen": "listened", "bind": "bound",
         "connect": "connected", "reuseport_alloc": "allocated the group",
         "reuseport_add_sock": "joined", "reuseport_detach_sock": "was detached",
         "reuseport_stop_listen_sock": "stopped listening"}


def sk_text(sk: int, event: str = "") -> str:
    if sk >= 0:
        return f"sk {sk}"
    return "reset" if event in ("accept", "reset", "syn") else "none"


def _moved_note(history: GroupHistory, pick: Pick, slot: int, sk: int) -> str:
    for change in reversed(history.recent(pick.group, pick.seq)):
        if change.moved_into(sk, slot):
            verb = VERBS.get(change.event, change.event)
            if change.sk == sk:
                return f", which took slot {slot} when it {verb} at seq {change.seq}"
            return f", which moved into slot {slot} when sk {change.sk} {verb} at seq {change.seq}"
    return ""


def _hash_chain(pick: Pick, history: GroupHistory) -> list[str]:
    if pick.hash is None or pick.start is None or not pick.socks:
        return [f"hash selection over {list(pick.socks)} (same answer for every hash)"]
    n, start = pick.num_socks, pick.start
    steps = [f"hash 0x{pick.hash:08x}", f"reciprocal_scale(hash, {n}) = {start}"]
    first = pick.socks[start]
    steps.append(f"socks[{start}] is sk {first}" + _moved_note(history, pick, start, first))
    if pick.reason == "incoming-cpu":
        if pick.slot is not None and pick.slot != start:
            steps.append(f"scanning on for SO_INCOMING_CPU = cpu {pick.cpu}: socks[{pick.slot}] "
                         f"is sk {pick.socks[pick.slot]} (incoming cpu "
                         f"{pick.incoming_cpus[pick.slot]})")
        else:
            steps.append(f"SO_INCOMING_CPU preference for cpu {pick.cpu} checked from that slot")
    elif pick.slot is not None and pick.slot != start:
        skipped = [s for s in pick.socks if s in pick.established]
        steps.append(f"TCP_ESTABLISHED socket(s) {skipped} skipped -> socks[{pick.slot}] is "
                     f"sk {pick.socks[pick.slot]}")
    return steps


def chain(pick: Pick | None, history: GroupHistory) -> list[str]:
    """The steps from the arrival to the model's choice."""
    if pick is None:
        return [UNKNOWN_TEXT["lost-events"]]
    steps: list[str] = []
    if pick.migrated_from is not None:
        closed, seq, cpu = pick.migrated_from
        steps.append(f"sk {closed} stopped listening at seq {seq} on cpu {cpu}; "
                     f"its queued connection is migrated by reuseport_migrate_sock()")
    if pick.unknown is not None:
        steps.append(pick.detail or UNKNOWN_TEXT.get(pick.unknown, pick.unknown))
        return steps
    if pick.reason == "no-listener":
        steps.append("no listening/bound socket matches the destination")
    elif pick.reason == "connected":
        steps.append(f"connected socket sk {pick.sk} matches the 4-tuple exactly")
    elif pick.reason == "lookup":
        steps.append(f"sk {pick.sk} scores best in the socket lookup (no reuseport selection)")
    elif pick.reason == "ebpf":
        steps.append(f"eBPF program {pick.prog} " +
                     ("dropped the packet" if pick.dropped else f"chose {sk_text(pick.sk)}"))
    elif pick.cbpf_index is not None:
        if pick.cbpf_index < pick.num_socks:
            steps.append(f"classic BPF returned {pick.cbpf_index} -> socks[{pick.cbpf_index}] is "
                         f"sk {pick.socks[pick.cbpf_index]}")
        else:
            steps.append(f"classic BPF returned {pick.cbpf_index} >= {pick.num_socks} sockets, "
                         "falls back to the hash")
            steps += _hash_chain(pick, history)
    elif pick.migrated_from is not None and pick.sk < 0 and not pick.socks:
        steps.append("no listener is left in the group (or migration is off) -> reset")
    else:
        steps += _hash_chain(pick, history)
    return steps


def profile_notes(pick: Pick | None, profile: Profile | None, recent: list[Change]) -> list[str]:
    """What the replay's profile decided here, where kernels differ (see tracekit.kernel.profiles)."""
    if pick is None or profile is None or pick.unknown is not None:
        return []
    notes = []
    if pick.reason == "incoming-cpu":
        notes.append(f"profile {profile.name}: SO_INCOMING_CPU-aware hash selection (from 6.2)")
    elif pick.reason in ("hash", "established-skip") and not profile.incoming_cpu and \
            any(cpu >= 0 for cpu in pick.incoming_cpus):
        notes.append(f"profile {profile.name}: hash selection ignores SO_INCOMING_CPU (before 6.2)")
    if pick.established and not profile.udp_hash4:
        notes.append(f"profile {profile.name}: connected UDP socket(s) {list(pick.established)} stay in "
                     "the group (before 6.13)")
    if profile.udp_hash4 and any(c.event == "connect" and any(new is None for _, _, new in c.moves)
                                 for c in recent):
        notes.append(f"profile {profile.name}: a connected UDP socket leaves its group (4-tuple hash, 6.13)")
    return notes


def explain(pick: Pick | None, history: GroupHistory, event: str, expected: int, observed: int,
            verdict: str, profile: Profile | None = None) -> str:
    steps = chain(pick, history)
    recent_all = history.recent(pick.group, pick.seq)[-RECENT:] if pick is not None else []
    steps += profile_notes(pick, profile, recent_all)
    if verdict == "unknown":
        steps.append(f"unknown, observed {sk_text(observed, event)}")
    else:
        steps.append(f"expected {sk_text(expected, event)}, observed {sk_text(observed, event)}")
    text = " -> ".join(steps)
    if pick is not None:
        recent = history.recent(pick.group, pick.seq)[-RECENT:]
        if recent:
            text += f" (recent changes to {pick.group}: " + "; ".join(c.describe() for c in recent) + ")"
    return text


def explain_ret(call: str, expected: int, observed: int) -> str:
    from tracekit.kernel.errno import strerror

    return f"{call} returns {strerror(expected)} in the model, the kernel returned {strerror(observed)}"


__all__ = ["Change", "chain", "explain", "explain_ret", "profile_notes", "sk_text"]
