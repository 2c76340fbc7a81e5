"""Reuseport selection with its reasons: what the kernel's callers get from `sock_reuseport.c`, plus
what a person needs to follow the choice (the hash, the start slot, the array at that moment).

The kernel function decides; this module only calls it and records the inputs. When the trace
lacks an input (no hash, no CPU while SO_INCOMING_CPU matters) the choice is `UNKNOWN` with a
reason, unless every possible value of the missing input gives the same answer.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Callable

from tracekit.kernel import cbpf
from tracekit.kernel.bpf import (
    BPF_PROG_TYPE_SK_REUSEPORT,
    BPF_SK_REUSEPORT_SELECT_OR_MIGRATE,
    ErrPtr,
    Skb,
    _Unknown,
)
from tracekit.kernel.sock import Sock, sock_net
from tracekit.kernel.sock_reuseport import (
    SockReuseport,
    reciprocal_scale,
    reuseport_migrate_sock,
    reuseport_select_sock,
    reuseport_select_sock_by_hash,
)

MAX_INDEPENDENCE_CHECK = 64


@dataclass(frozen=True)
class Pick:
    """Where a connection or datagram goes, and why.

    `sk` is the chosen socket id, or -1 for none (reset / drop); `unknown` names what the trace
    lacks when the model cannot decide (then `sk` is meaningless).
    """

    sk: int
    reason: str
    unknown: str | None = None
    group: str | None = None
    reuseport_id: int = -1
    hash: int | None = None
    cpu: int | None = None
    num_socks: int = 0
    start: int | None = None
    slot: int | None = None
    socks: tuple[int, ...] = ()
    incoming_cpus: tuple[int, ...] = ()
    established: tuple[int, ...] = ()
    prog: str | None = None
    cbpf_index: int | None = None
    dropped: bool = False
    seq: int | None = None
    migrated_from: tuple[int, int | None, int | None] | None = None  # (closed sk, seq, cpu)
    detail: str | None = None  # what exactly the trace lacks, when `unknown` can say more


_PICK_FIELDS = frozenset(f.name for f in fields(Pick))
# every field in declaration order, as `Pick.__init__` fills `__dict__` (`sk`, `reason`: given)
_PICK_DEFAULTS = {f.name: None if f.name in ("sk", "reason") else f.default for f in fields(Pick)}


def replace_pick(pick: Pick, **changes: Any) -> Pick:
    """`dataclasses.replace(pick, **changes)` without running `__init__` again: replays copy a
    pick or two per migration and per kernel-layer selection, and the copy is the cost."""
    if not _PICK_FIELDS.issuperset(changes):
        raise TypeError(f"Pick has no field(s) {sorted(changes.keys() - _PICK_FIELDS)}")
    new = object.__new__(Pick)
    new.__dict__.update(pick.__dict__, **changes)
    return new


def new_pick(sk: int, reason: str, **values: Any) -> Pick:
    """`Pick(sk, reason, **values)` without running the frozen dataclass's `__init__` (one
    `object.__setattr__` per field): a stopping listener makes one or two per group."""
    if not _PICK_FIELDS.issuperset(values):
        raise TypeError(f"Pick has no field(s) {sorted(values.keys() - _PICK_FIELDS)}")
    new = object.__new__(Pick)
    new.__dict__.update(_PICK_DEFAULTS, sk=sk, reason=reason, **values)
    return new


def prog_label(reuse: SockReuseport | None) -> str | None:
    if reuse is None or reuse.prog is None:
        return None
    if reuse.prog.type == BPF_PROG_TYPE_SK_REUSEPORT:
        return f"ebpf:{reuse.prog.name}"
    return "cbpf"


def _snapshot(reuse: SockReuseport) -> dict:
    live = reuse.live()
    return {
        "reuseport_id": reuse.reuseport_id,
        "num_socks": reuse.num_socks,
        "socks": tuple(s.sk_id for s in live),
        "incoming_cpus": tuple(s.sk_incoming_cpu for s in live),
        "established": tuple(s.sk_id for s in live if s.sk_state == 1),
        "prog": prog_label(reuse),
    }


def _unknown_reason_of(reuse: SockReuseport) -> str:
    prog = reuse.prog
    if prog is not None and prog.type == BPF_PROG_TYPE_SK_REUSEPORT:
        return "unregistered-prog"
    return "cbpf-unknown"


def _cpu_matters(reuse: SockReuseport) -> bool:
    first = reuse.socks[0]
    return bool(first is not None and sock_net(first).profile.incoming_cpu and reuse.incoming_cpu)


def _hash_independent(reuse: SockReuseport, cpu: int) -> Sock | None | _Unknown:
    """The hash selection's answer when it is the same for every hash, else UNKNOWN."""
    n = reuse.num_socks
    if n > MAX_INDEPENDENCE_CHECK:
        return _Unknown()
    answers = set()
    for start in range(n):
        # the smallest u32 whose reciprocal_scale(., n) is `start`
        h = -(-(start << 32) // n)
        answers.add(reuseport_select_sock_by_hash(reuse, h, n, cpu))
        if len(answers) > 1:
            return _Unknown()
    return answers.pop()


def _hash_reason(reuse: SockReuseport, hash: int, chosen: Sock | None) -> tuple[str, int, int | None]:
    n = reuse.num_socks
    start = reciprocal_scale(hash, n)
    slot = None
    if chosen is not None:  # the slot the scan took: the first holding it from `start` on
        live = reuse.live()
        slot = next((i % n for i in range(start, start + n) if live[i % n] is chosen), None)
    if _cpu_matters(reuse):
        return "incoming-cpu", start, slot
    if slot is not None and slot != start:
        return "established-skip", start, slot
    return "hash", start, slot


def select_traced(sk: Sock, hash: int | None, skb: Skb | None, hdr_len: int,
                  cpu_known: bool = True) -> tuple[Sock | None | ErrPtr | _Unknown, Pick]:
    """`reuseport_select_sock(sk, hash, skb, hdr_len)` and the record of how it chose."""
    reuse = sk.sk_reuseport_cb
    if reuse is None:
        return None, Pick(sk=-1, reason="hash")
    snap = _snapshot(reuse)
    cpu = sock_net(sk).cpu
    base = Pick(sk=-1, reason="hash", hash=hash, cpu=cpu if cpu_known else None, **snap)
    if not reuse.num_socks:
        return None, base
    prog = reuse.prog
    if not cpu_known and _cpu_matters(reuse):
        return _Unknown(), replace_pick(base, unknown="no-cpu", reason="incoming-cpu")

    cbpf_index = None
    if prog is not None and skb is not None and prog.type != BPF_PROG_TYPE_SK_REUSEPORT:
        try:
            cbpf_index = cbpf.bpf_prog_run(prog.insns, skb)
        except cbpf.Unknown as why:
            return _Unknown(), replace_pick(base, unknown="cbpf-unknown", reason="cbpf",
                                            detail=str(why))
        base = replace_pick(base, cbpf_index=cbpf_index)
        if cbpf_index < reuse.num_socks:
            chosen = reuse.socks[cbpf_index]
            return chosen, replace_pick(base, sk=chosen.sk_id, reason="cbpf", slot=cbpf_index)

    if hash is None:
        if prog is not None and skb is not None and prog.type == BPF_PROG_TYPE_SK_REUSEPORT:
            unknown = "unregistered-prog" if prog.name not in sock_net(sk).ebpf_policies else "no-hash"
            return _Unknown(), replace_pick(base, unknown=unknown, reason="ebpf")
        result = _hash_independent(reuse, cpu)
        if isinstance(result, _Unknown):
            return result, replace_pick(base, unknown="no-hash")
        reason = "incoming-cpu" if _cpu_matters(reuse) else "hash"
        return result, replace_pick(base, sk=-1 if result is None else result.sk_id, reason=reason)

    result = reuseport_select_sock(sk, hash, skb, hdr_len)
    if isinstance(result, _Unknown):
        return result, replace_pick(base, unknown=_unknown_reason_of(reuse),
                               reason="ebpf" if snap["prog"] and snap["prog"] != "cbpf" else "cbpf")
    if isinstance(result, ErrPtr):
        return result, replace_pick(base, dropped=True, reason="ebpf")
    if prog is not None and skb is not None and prog.type == BPF_PROG_TYPE_SK_REUSEPORT:
        return result, replace_pick(base, sk=-1 if result is None else result.sk_id, reason="ebpf")
    reason, start, slot = _hash_reason(reuse, hash, result)
    return result, replace_pick(base, sk=-1 if result is None else result.sk_id, reason=reason,
                           start=start, slot=slot)


def migrate_traced(sk: Sock, child: Sock, hash: int | None) -> tuple[Sock | None | _Unknown, Pick]:
    """`reuseport_migrate_sock(sk, child, NULL)` for a queued connection whose flow hash is `hash`."""
    reuse = sk.sk_reuseport_cb
    net = sock_net(sk)
    cpu = net.cpu
    if reuse is None:
        return None, new_pick(-1, "migration", cpu=cpu)
    base = new_pick(-1, "migration", hash=hash, cpu=cpu, **_snapshot(reuse))
    prog = reuse.prog
    capable_prog = prog is not None and prog.expected_attach_type == BPF_SK_REUSEPORT_SELECT_OR_MIGRATE
    if hash is None and reuse.num_socks and (capable_prog or net.sysctl_tcp_migrate_req):
        if capable_prog:
            unknown = "unregistered-prog" if prog.name not in net.ebpf_policies else "no-hash"
            return _Unknown(), replace_pick(base, unknown=unknown)
        result = _hash_independent(reuse, cpu)
        if isinstance(result, _Unknown):
            return result, replace_pick(base, unknown="no-hash")
        if result is None:
            net.mib["TCPMigrateReqFailure"] += 1
        return result, replace_pick(base, sk=-1 if result is None else result.sk_id)
    child.sk_hash = hash or 0
    result = reuseport_migrate_sock(sk, child, None)
    if isinstance(result, _Unknown):
        return result, replace_pick(base, unknown=_unknown_reason_of(reuse))
    start = reciprocal_scale(hash, reuse.num_socks) if hash is not None and reuse.num_socks else None
    slot = None
    if isinstance(result, Sock):
        slot = next((i for i, s in enumerate(reuse.live()) if s is result), None)
    return result, replace_pick(base, sk=-1 if result is None else result.sk_id, start=start,
                                slot=slot)


def migrate_queue_traced(sk: Sock, new_child: Callable[[], Sock], hashes: list[int | None],
                         **label: Any) -> list[tuple[Sock | None | _Unknown, Pick]]:
    """`migrate_traced(sk, child, hash)` for each child of a stopped listener's queue in queue
    order, each pick with the fields `label` (group, seq, origin) too. While one listener stops,
    nothing changes the group, the namespace's CPU or the sysctl (`inet_csk_listen_stop()` only
    moves children), so the group is read once; without a migration-capable program a child's
    answer is `reuseport_migrate_sock()`'s by its hash alone. Children without a hash, and
    groups with such a program, go through `migrate_traced` itself, each with its own child
    socket (`new_child()`). A listener outside any group (it left its group when it stopped:
    nothing migrates) gets one answer for every child: `reuseport_migrate_sock()` returns NULL
    before it reads the child."""
    reuse = sk.sk_reuseport_cb
    if reuse is None:
        return [_migrated(sk, new_child(), None, label)] * len(hashes) if hashes else []
    prog = reuse.prog
    if prog is not None and prog.expected_attach_type == BPF_SK_REUSEPORT_SELECT_OR_MIGRATE:
        return [_migrated(sk, new_child(), hash, label) for hash in hashes]
    net = sock_net(sk)
    base = new_pick(-1, "migration", cpu=net.cpu, **_snapshot(reuse), **label)
    n = reuse.num_socks
    slot_of = {id(s): i for i, s in enumerate(reuse.live())}
    unknown = _unknown_reason_of(reuse)
    child = new_child()  # only its `sk_hash` is read here
    # the hash only picks the slot the search starts from (`reciprocal_scale(hash, num_socks)`),
    # so children that start at one slot get one answer: asked once, its pick copied
    answers: dict[int, tuple[Sock | None | _Unknown, Pick]] = {}
    new, set_dict = object.__new__, object.__setattr__
    out: list[tuple[Sock | None | _Unknown, Pick]] = []
    for hash in hashes:
        if hash is None:
            out.append(_migrated(sk, new_child(), hash, label))
            continue
        start = reciprocal_scale(hash, n)
        known = answers.get(start)
        if known is None:
            child.sk_hash = hash
            result = reuseport_migrate_sock(sk, child, None)
            if isinstance(result, _Unknown):
                pick = replace_pick(base, unknown=unknown)
            else:
                chosen = isinstance(result, Sock)
                pick = replace_pick(base, sk=result.sk_id if chosen else -1,
                                    start=start if n else None,
                                    slot=slot_of.get(id(result)) if chosen else None)
            known = answers[start] = (result, pick)
        elif known[0] is None:  # reuseport_migrate_sock() counts each child it fails
            net.mib["TCPMigrateReqFailure"] += 1
        # `replace_pick(known[1], hash=hash)`, once per child: its fields copied, the hash set
        values = known[1].__dict__.copy()
        values["hash"] = hash
        pick = new(Pick)
        set_dict(pick, "__dict__", values)
        out.append((known[0], pick))
    return out


def _migrated(sk: Sock, child: Sock, hash: int | None,
              label: dict[str, Any]) -> tuple[Sock | None | _Unknown, Pick]:
    nsk, pick = migrate_traced(sk, child, hash)
    return nsk, replace_pick(pick, **label)
