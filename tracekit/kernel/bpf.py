"""Programs attached to a reuseport group, the packet they see, and running them.

Classic BPF (`SO_ATTACH_REUSEPORT_CBPF`) is interpreted by `tracekit.kernel.cbpf`. An eBPF program
(`SO_ATTACH_REUSEPORT_EBPF`) is opaque to replay: the trace names it and the user registers a
Python policy under that name in `Net.ebpf_policies`. An unregistered program makes its decisions
`UNKNOWN`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Union

from tracekit.kernel.errno import ECONNREFUSED

if TYPE_CHECKING:
    from tracekit.kernel.sock import Sock
    from tracekit.kernel.sock_reuseport import SockReuseport

# include/uapi/linux/bpf.h
BPF_PROG_TYPE_SOCKET_FILTER = 1
BPF_PROG_TYPE_SK_REUSEPORT = 21
BPF_SK_REUSEPORT_SELECT = 39
BPF_SK_REUSEPORT_SELECT_OR_MIGRATE = 40

SK_DROP = 0
SK_PASS = 1


class _Unknown:
    """The model cannot decide: the trace lacks what the decision needs."""

    _instance: _Unknown | None = None

    def __new__(cls) -> _Unknown:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNKNOWN"

    def __bool__(self) -> bool:
        return True


UNKNOWN = _Unknown()


@dataclass(frozen=True)
class ErrPtr:
    """`ERR_PTR(err)`: a program refused the packet (`SK_DROP` gives `-ECONNREFUSED`)."""

    err: int

    def __repr__(self) -> str:
        return f"ERR_PTR({self.err})"


SelectResult = Union["Sock", None, ErrPtr, _Unknown]


@dataclass(frozen=True)
class BpfProg:
    """`struct bpf_prog`, as far as reuseport cares.

    A classic program carries its instructions `(code, jt, jf, k)`; an eBPF program carries the
    name a policy is registered under.
    """

    type: int
    insns: tuple[tuple[int, int, int, int], ...] = ()
    name: str = ""
    expected_attach_type: int = BPF_SK_REUSEPORT_SELECT

    @classmethod
    def cbpf(cls, insns: tuple[tuple[int, int, int, int], ...]) -> BpfProg:
        return cls(type=BPF_PROG_TYPE_SOCKET_FILTER, insns=tuple(insns))

    @classmethod
    def ebpf(cls, name: str, *, migrate: bool = False) -> BpfProg:
        attach = BPF_SK_REUSEPORT_SELECT_OR_MIGRATE if migrate else BPF_SK_REUSEPORT_SELECT
        return cls(type=BPF_PROG_TYPE_SK_REUSEPORT, name=name, expected_attach_type=attach)


@dataclass(frozen=True)
class Skb:
    """What a program can read of `struct sk_buff`.

    `payload` is the data after `hdr_len` (what a classic program sees at offset 0), possibly
    truncated; `len` its full length when known. `network_header` is the bytes from the network
    header up to the payload, when the trace lets us rebuild them. `cpu` is the CPU running the
    selection. Fields the trace lacks are None; a program that reads them makes the result UNKNOWN.
    """

    payload: bytes | None = None
    len: int | None = None
    network_header: bytes | None = None
    protocol: int | None = None
    cpu: int | None = None
    queue_mapping: int | None = None
    rxhash: int | None = None


@dataclass(frozen=True)
class SkReuseportMd:
    """`struct sk_reuseport_md`, as a registered eBPF policy sees it."""

    hash: int
    sk: int
    migrating_sk: int | None
    socks: tuple[int, ...]
    bind_inany: bool
    ip_protocol: int
    payload: bytes | None
    cpu: int


Policy = Callable[[SkReuseportMd], Union[int, None, ErrPtr]]
"""Returns the `sk` id to select, None for `SK_PASS` without a selection, or `ErrPtr` to drop."""

DROP = ErrPtr(-ECONNREFUSED)


def run_bpf_filter(reuse: SockReuseport, socks: int, prog: BpfProg, skb: Skb,
                   hdr_len: int) -> Sock | None | _Unknown:
    from tracekit.kernel import cbpf

    try:
        index = cbpf.bpf_prog_run(prog.insns, skb)
    except cbpf.Unknown:
        return UNKNOWN
    if index >= socks:
        return None
    return reuse.socks[index]


def bpf_run_sk_reuseport(reuse: SockReuseport, sk: Sock, prog: BpfProg, skb: Skb | None,
                         migrating_sk: Sock | None, hash: int) -> SelectResult:
    from tracekit.kernel.sock import sock_net

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
