"""Probe records to kernel-layer trace rows: one host per network namespace, small socket ids.

Pure: `Translator.rows(record)` returns the rows a record stands for, in order, with `host` and
`seq` filled in. The vocabulary is the simulator's (`tracekit.simulator.workloads.host`), so a
probe trace replays the way a simulated one does:

- `reuseport_alloc` / `reuseport_add_sock` (sk, sk2, value = bind_inany, ret) carry the joining
  socket's proto, family, laddr and lport, so replay names a group `tcp 0.0.0.0:443`;
- `reuseport_select_sock` (sk, hash, cpu, observed, the packet's 4-tuple from the listener's
  side, payload when the group has a program);
- `reuseport_migrate_sock` (sk, sk2 = the migrating request or child, hash = its `sk_hash`,
  cpu, observed, its 4-tuple);
- `reuseport_stop_listen_sock`, `reuseport_detach_sock`, `reuseport_attach_prog` (a classic
  program's instructions as `prog`; an eBPF program by its kernel name in `name`, value = its
  expected attach type), `reuseport_detach_prog`, `reuseport_has_conns_set`,
  `reuseport_update_incoming_cpu`, `sk_state`;
- `sysctl net.ipv4.tcp_migrate_req` each time the value the kernel read (at a stop or a
  migration) differs from the last one written for that namespace.

Socket ids (`SocketIds`): a kernel address keeps its id while the socket can still be referred
to. One that left its group (`reuseport_detach_sock`) keeps it too (a closing listener still
calls `reuseport_migrate_sock` for its queue, which then finds no group), until its address joins
a group again: the kernel reuses freed addresses, so that is a new socket with a new id. After
bpftrace reports lost events `forget_all()` drops every id: sockets seen again get new ids, and
replay judges the decisions of their groups `unknown` (membership unknown), exactly like groups
built before the probe started.

Hosts: one per network namespace, named `<node>/netns:<inode>`; namespaces are told apart by
their `net_cookie`, which is never reused (an inode number is, once its namespace is freed), so a
later namespace with a recycled inode is `<node>/netns:<inode>.2`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tracekit.probe.lines import Record, address, be16
from tracekit.probe.script import PROG_WORDS

__all__ = ["SocketIds", "Translator", "MIGRATE_REQ", "host_name"]

MIGRATE_REQ = "net.ipv4.tcp_migrate_req"
TCP_ESTABLISHED, TCP_CLOSE = 1, 7
IPPROTO = {6: "tcp", 17: "udp"}
FAMILY = {2: 4, 10: 6}
BPF_PROG_TYPE_SK_REUSEPORT = 21


DEPARTED_KEPT = 1 << 16
"""Addresses of sockets that left their group, kept (oldest dropped first) for late references."""


class SocketIds:
    """Kernel socket addresses to small ids, stable while the socket can be referred to."""

    def __init__(self) -> None:
        self._ids: dict[int, int] = {}
        self._departed: dict[int, None] = {}  # insertion-ordered: oldest first
        self.next_id = 1

    def __contains__(self, address: int) -> bool:
        return address in self._ids

    def of(self, address: int) -> int:
        sk = self._ids.get(address)
        if sk is None:
            sk = self._ids[address] = self.next_id
            self.next_id += 1
        return sk

    def joining(self, address: int) -> int:
        """The id of a socket that joins a group: a departed address is a new socket now."""
        if self._departed.pop(address, 0) is None:
            self._ids.pop(address, None)
        return self.of(address)

    def member(self, address: int) -> bool:
        return address in self._ids and address not in self._departed

    def depart(self, address: int) -> None:
        self._departed[address] = None
        if len(self._departed) > DEPARTED_KEPT:
            oldest = next(iter(self._departed))
            del self._departed[oldest]
            self._ids.pop(oldest, None)

    def fresh(self) -> int:
        """An id for a socket seen once (a migrating request)."""
        sk = self.next_id
        self.next_id += 1
        return sk

    def forget_all(self) -> None:
        self._ids.clear()
        self._departed.clear()

    def __len__(self) -> int:
        return len(self._ids)


def host_name(node: str, netns: int, generation: int = 1) -> str:
    """The trace host of a network namespace: `<node>/netns:<inode>` (`.N` for the N-th
    namespace the probe met with that inode)."""
    return f"{node}/netns:{netns}" + (f".{generation}" if generation > 1 else "")


@dataclass
class _Host:
    name: str
    next_seq: int = 0
    migrate_req: int | None = None


@dataclass
class Translator:
    """Turns records into rows; `ports` and `netns` (inode numbers) keep only those sockets."""

    node: str
    ports: frozenset[int] = frozenset()
    netns: frozenset[int] = frozenset()
    ids: SocketIds = field(default_factory=SocketIds)
    hosts: dict[int, _Host] = field(default_factory=dict)  # by net_cookie
    generations: dict[int, int] = field(default_factory=dict)  # namespaces met per inode
    rows_written: int = 0
    dropped_programs: int = 0  # classic programs longer than the probe reads

    def rows(self, r: Record) -> list[dict[str, Any]]:
        f = r.f
        net = f.get("net")
        if net is None or (self.netns and net not in self.netns):
            return []
        handler = _HANDLERS.get(r.code)
        if handler is None:
            return []
        out: list[dict[str, Any]] = []
        handler(self, r, out)
        host = self._host(r)
        for row in out:
            row["host"], row["seq"] = host.name, host.next_seq
            row.setdefault("ts_ns", r.ts)
            host.next_seq += 1
        self.rows_written += len(out)
        return out

    # -- helpers ----------------------------------------------------------------------------------
    def _host(self, r: Record) -> _Host:
        cookie = r.f["cookie"]
        host = self.hosts.get(cookie)
        if host is None:
            net = r.f["net"]
            generation = self.generations[net] = self.generations.get(net, 0) + 1
            host = self.hosts[cookie] = _Host(host_name(self.node, net, generation))
        return host

    def _watched(self, address: int, lport: int | None = None) -> bool:
        """Whether a socket is one the probe writes about: known already, or on a chosen port."""
        if not self.ports or address in self.ids:
            return True
        return lport is not None and lport in self.ports

    def _migrate_req(self, r: Record, out: list[dict[str, Any]]) -> None:
        host = self._host(r)
        value = r.f["migrate_req"] & 0xFF
        if host.migrate_req != value:
            host.migrate_req = value
            out.append({"event": "sysctl", "name": MIGRATE_REQ, "value": value})


def _sock_columns(f: dict[str, int]) -> dict[str, Any]:
    family = FAMILY.get(f["family"])
    columns: dict[str, Any] = {"proto": IPPROTO.get(f["proto"] & 0xFFFF), "family": family,
                               "lport": f["lport"] & 0xFFFF}
    if family == 4:
        columns["laddr"] = address(4, (f["v4"],))
    elif family == 6:
        columns["laddr"] = address(6, (f["a0"], f["a1"], f["a2"], f["a3"]))
    return columns


def _flow_columns(f: dict[str, int], *, ports_be: tuple[bool, bool]) -> dict[str, Any]:
    family = {4: 4, 6: 6, 2: 4, 10: 6}.get(f["ffam"])
    if family is None:
        return {}
    lport, rport = f["lport"] & 0xFFFF, f["rport"] & 0xFFFF
    return {
        "laddr": address(family, (f["l0"], f["l1"], f["l2"], f["l3"])),
        "lport": be16(lport) if ports_be[0] else lport,
        "raddr": address(family, (f["r0"], f["r1"], f["r2"], f["r3"])),
        "rport": be16(rport) if ports_be[1] else rport,
    }


def _ret(value: int) -> int:
    """A kernel `int` return read as an unsigned 64-bit register."""
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


def _alloc(t: Translator, r: Record, out: list) -> None:
    f = r.f
    columns = _sock_columns(f)
    if not t._watched(f["sk"], columns.get("lport")):
        return
    _incoming_cpu_before_join(t, f, out)
    out.append({"event": "reuseport_alloc", "sk": t.ids.joining(f["sk"]), "value": f["inany"] & 1,
                "ret": _ret(f["ret"]), **columns})


def _add(t: Translator, r: Record, out: list) -> None:
    f = r.f
    columns = _sock_columns(f)
    if not t._watched(f["sk"], columns.get("lport")) and not t._watched(f["sk2"]):
        return
    _incoming_cpu_before_join(t, f, out)
    out.append({"event": "reuseport_add_sock", "sk": t.ids.joining(f["sk"]), "sk2": t.ids.of(f["sk2"]),
                "value": f["inany"] & 1, "ret": _ret(f["ret"]), **columns})


def _incoming_cpu_before_join(t: Translator, f: dict[str, int], out: list) -> None:
    """SO_INCOMING_CPU set before the socket joined (a socket the probe meets now): the value
    `__reuseport_add_sock()` counts, written as the setsockopt's `reuseport_update_incoming_cpu`
    call, which outside a group only sets `sk_incoming_cpu`."""
    cpu = _ret(f["icpu"])
    if cpu >= 0 and not t.ids.member(f["sk"]):
        out.append({"event": "reuseport_update_incoming_cpu", "sk": t.ids.joining(f["sk"]),
                    "value": cpu})


def _detach(t: Translator, r: Record, out: list) -> None:
    address_ = r.f["sk"]
    if not t.ids.member(address_):
        return  # a socket the probe never saw join: nothing replay could do with it
    out.append({"event": "reuseport_detach_sock", "sk": t.ids.of(address_)})
    t.ids.depart(address_)


def _stop_listen(t: Translator, r: Record, out: list) -> None:
    f = r.f
    if not t._watched(f["sk"]):
        return
    t._migrate_req(r, out)
    out.append({"event": "reuseport_stop_listen_sock", "sk": t.ids.of(f["sk"]),
                "proto": IPPROTO.get(f["proto"] & 0xFFFF, "tcp")})


def _select(t: Translator, r: Record, out: list) -> None:
    f = r.f
    flow = _flow_columns(f, ports_be=(True, True))
    if not t._watched(f["sk"], flow.get("lport")):
        return
    row = {"event": "reuseport_select_sock", "sk": t.ids.of(f["sk"]), "hash": f["hash"] & 0xFFFFFFFF,
           "cpu": r.cpu, "observed": t.ids.of(f["ret"]) if f["ret"] else -1, **flow}
    if r.payload is not None:
        row["payload"] = r.payload
    out.append(row)


def _migrate(t: Translator, r: Record, out: list) -> None:
    f = r.f
    if not t._watched(f["sk"]):
        return
    t._migrate_req(r, out)
    flow = _flow_columns(f, ports_be=(False, True))  # skc_num is host order, skc_dport is not
    out.append({"event": "reuseport_migrate_sock", "sk": t.ids.of(f["sk"]), "sk2": t.ids.fresh(),
                "hash": f["hash"] & 0xFFFFFFFF, "cpu": r.cpu,
                "observed": t.ids.of(f["ret"]) if f["ret"] else -1, **flow})


def _attach_prog(t: Translator, r: Record, out: list) -> None:
    f = r.f
    if not t._watched(f["sk"]):
        return
    row: dict[str, Any] = {"event": "reuseport_attach_prog", "sk": t.ids.of(f["sk"]),
                           "ret": _ret(f["ret"])}
    if f["type"] == BPF_PROG_TYPE_SK_REUSEPORT or not f["len"]:
        row.update(prog=r.name.encode(), name=r.name or "ebpf", value=f["attach"])
    elif f["len"] > PROG_WORDS or len(r.insns) != f["len"]:
        # the probe did not read the whole classic program: replay cannot run it
        t.dropped_programs += 1
        row.update(prog=b"", name=f"cbpf-{f['len']}-insns-unread")
    else:
        row["prog"] = b"".join(i.to_bytes(8, "little") for i in r.insns)
    out.append(row)


def _detach_prog(t: Translator, r: Record, out: list) -> None:
    if t._watched(r.f["sk"]):
        out.append({"event": "reuseport_detach_prog", "sk": t.ids.of(r.f["sk"]),
                    "ret": _ret(r.f["ret"])})


def _has_conns(t: Translator, r: Record, out: list) -> None:
    if t.ids.member(r.f["sk"]):
        sk = t.ids.of(r.f["sk"])
        # __ip4_datagram_connect() / __ip6_datagram_connect(): sk_state = TCP_ESTABLISHED next
        out.append({"event": "reuseport_has_conns_set", "sk": sk})
        out.append({"event": "sk_state", "sk": sk, "value": TCP_ESTABLISHED})


def _incoming_cpu(t: Translator, r: Record, out: list) -> None:
    if t.ids.member(r.f["sk"]):
        value = _ret(r.f["val"])
        out.append({"event": "reuseport_update_incoming_cpu", "sk": t.ids.of(r.f["sk"]), "value": value})


def _state(t: Translator, r: Record, out: list) -> None:
    if t.ids.member(r.f["sk"]):
        out.append({"event": "sk_state", "sk": t.ids.of(r.f["sk"]), "value": r.f["new"]})


def _udp_disconnect(t: Translator, r: Record, out: list) -> None:
    if t.ids.member(r.f["sk"]):
        out.append({"event": "sk_state", "sk": t.ids.of(r.f["sk"]), "value": TCP_CLOSE})


_HANDLERS = {
    "A": _alloc, "D": _add, "X": _detach, "L": _stop_listen, "S": _select, "M": _migrate,
    "P": _attach_prog, "Q": _detach_prog, "C": _has_conns, "I": _incoming_cpu, "T": _state,
    "U": _udp_disconnect,
}
