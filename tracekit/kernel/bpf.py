"""Running the program attached to a reuseport group (`struct bpf_prog`, `struct sk_buff` and
`struct sk_reuseport_md` are in `tracekit.kernel.structs`, re-exported here).

Classic BPF (`SO_ATTACH_REUSEPORT_CBPF`) is interpreted by `tracekit.kernel.cbpf`. An eBPF program
(`SO_ATTACH_REUSEPORT_EBPF`) is opaque to replay: the trace names it and the user registers a
Python policy under that name in `Net.ebpf_policies`. An unregistered program makes its decisions
`UNKNOWN`.
"""

from __future__ import annotations

from tracekit.kernel import cbpf
from tracekit.kernel.sock import sock_net
from tracekit.kernel.structs import (
    BPF_PROG_TYPE_SK_REUSEPORT,
    BPF_PROG_TYPE_SOCKET_FILTER,
    BPF_SK_REUSEPORT_SELECT,
    BPF_SK_REUSEPORT_SELECT_OR_MIGRATE,
    DROP,
    SK_DROP,
    SK_PASS,
    UNKNOWN,
    BpfProg,
    ErrPtr,
    Policy,
    SelectResult,
    Skb,
    Sock,
    SockReuseport,
    SkReuseportMd,
    _Unknown,
)

__all__ = ["BPF_PROG_TYPE_SK_REUSEPORT", "BPF_PROG_TYPE_SOCKET_FILTER", "BPF_SK_REUSEPORT_SELECT",
           "BPF_SK_REUSEPORT_SELECT_OR_MIGRATE", "DROP", "SK_DROP", "SK_PASS", "UNKNOWN", "BpfProg",
           "ErrPtr", "Policy", "SelectResult", "SkReuseportMd", "Skb", "bpf_run_sk_reuseport",
           "run_bpf_filter"]


def run_bpf_filter(reuse: SockReuseport, socks: int, prog: BpfProg, skb: Skb,
                   hdr_len: int) -> Sock | None | _Unknown:
    try:
        index = cbpf.bpf_prog_run(prog.insns, skb)
    except cbpf.Unknown:
        return UNKNOWN
    if index >= socks:
        return None
    return reuse.socks[index]


def bpf_run_sk_reuseport(reuse: SockReuseport, sk: Sock, prog: BpfProg, skb: Skb | None,
                         migrating_sk: Sock | None, hash: int) -> SelectResult:
    policy = sock_net(sk).ebpf_policies.get(prog.name)
    if policy is None:
        return UNKNOWN
    live = reuse.socks[: reuse.num_socks]
    md = SkReuseportMd(
        hash=hash,
        sk=sk.sk_id,
        migrating_sk=migrating_sk.sk_id if migrating_sk is not None else None,
        socks=tuple(s.sk_id for s in live),
        bind_inany=bool(reuse.bind_inany),
        ip_protocol=sk.sk_protocol,
        payload=skb.payload if skb is not None else None,
        cpu=sock_net(sk).cpu,
    )
    action = policy(md)
    if isinstance(action, ErrPtr):
        return action
    if action is None:
        return None
    for candidate in live:
        if candidate.sk_id == action:
            return candidate
    # bpf_sk_select_reuseport() refuses a socket outside the group; the program then passes
    # without a selection and the kernel falls back to the hash.
    return None
