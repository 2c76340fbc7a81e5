"""The structs and constants the model shares, kept together as the kernel keeps them in headers.

`struct sock` (include/net/sock.h), `struct sock_reuseport` (include/net/sock_reuseport.h),
`struct bpf_prog` and the `sk_buff` fields a program reads (include/linux/filter.h,
include/linux/skbuff.h), `struct sk_reuseport_md` (include/uapi/linux/bpf.h). Data only: the
functions live in the modules named after the C files (`sock`, `sock_reuseport`, `bpf`, `cbpf`),
and every one of them imports from here, never the other way round.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Union

from tracekit.kernel.errno import ECONNREFUSED
from tracekit.kernel.net import Net

# include/net/tcp_states.h
TCP_ESTABLISHED = 1
TCP_SYN_SENT = 2
TCP_SYN_RECV = 3
TCP_CLOSE = 7
TCP_LISTEN = 10
TCP_NEW_SYN_RECV = 12

# include/uapi/linux/in.h
IPPROTO_TCP = 6
IPPROTO_UDP = 17

PROTOCOLS = {"tcp": IPPROTO_TCP, "udp": IPPROTO_UDP}

# include/uapi/linux/bpf.h
BPF_PROG_TYPE_SOCKET_FILTER = 1
BPF_PROG_TYPE_SK_REUSEPORT = 21
BPF_SK_REUSEPORT_SELECT = 39
BPF_SK_REUSEPORT_SELECT_OR_MIGRATE = 40

SK_DROP = 0
SK_PASS = 1


@dataclass(eq=False)
class Sock:
    """A socket as sock_reuseport.c sees it. Identity is the object; `sk_id` is the trace's id."""

    sk_id: int
    sk_net: Net
    sk_protocol: int = IPPROTO_TCP
    sk_state: int = TCP_CLOSE
    sk_reuseport: bool = False
    sk_reuseport_cb: SockReuseport | None = None
    sk_incoming_cpu: int = -1
    sk_hash: int = 0
    hashed: bool = False

    def __repr__(self) -> str:
        return f"sk {self.sk_id}"


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


@dataclass(eq=False)
class SockReuseport:
    """`struct sock_reuseport`."""

    max_socks: int
    num_socks: int = 0
    num_closed_socks: int = 0
    incoming_cpu: int = 0
    reuseport_id: int = -1
    bind_inany: bool = False
    has_conns: bool = False
    prog: BpfProg | None = None
    socks: list[Sock | None] = field(default_factory=list)

    def live(self) -> list[Sock]:
        """The listening section, in array order."""
        return self.socks[: self.num_socks]  # type: ignore[return-value]

    def closed(self) -> list[Sock]:
        """The closed section, in array order."""
        return self.socks[self.max_socks - self.num_closed_socks : self.max_socks]  # type: ignore[return-value]

    def __repr__(self) -> str:
        return (f"reuseport_id={self.reuseport_id} socks={self.live()!r} "
                f"closed={self.closed()!r} max_socks={self.max_socks}")


@dataclass(frozen=True)
class Headers:
    """The bytes of a packet from the link-layer header to the payload (`tracekit.kernel.packet`).

    `data` holds them (or, where `complete` is False, the known start of them: the transport
    header's length is not known); `unknown[i]` has the bits of `data[i]` the trace cannot know
    (their value in `data` is 0); `network` is where the network header starts."""

    data: bytes
    unknown: bytes
    network: int
    complete: bool


@dataclass(frozen=True)
class Skb:
    """What a program can read of `struct sk_buff`.

    `payload` is the data after `hdr_len` (what a classic program sees at offset 0), possibly
    truncated; `len` its full length when known. `headers` are the link-layer, network and
    transport headers in front of it, as far as the trace knows them (`tracekit.kernel.packet`),
    or a function that builds them when a program first reads them.
    `cpu` is the CPU running the selection. Fields the trace lacks are None; a program that reads
    them makes the result UNKNOWN.
    """

    payload: bytes | None = None
    len: int | None = None
    headers: Headers | Callable[[], Headers] | None = None
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


SelectResult = Union[Sock, None, ErrPtr, _Unknown]

Policy = Callable[[SkReuseportMd], Union[int, None, ErrPtr]]
"""Returns the `sk` id to select, None for `SK_PASS` without a selection, or `ErrPtr` to drop."""

DROP = ErrPtr(-ECONNREFUSED)
