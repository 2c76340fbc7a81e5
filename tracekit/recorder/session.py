"""A recording session: runs scenario steps on real sockets in the current (private) namespace and
writes down, as socket-layer events of the trace format, every operation and every observation."""

from __future__ import annotations

import errno
import os
import resource
import socket
import struct
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any

from tracekit.recorder import cbpf, netns, rawaddr, steering
from tracekit.recorder.flows import Flow, family_of, plain_address
from tracekit.recorder.observer import Observer, SelectionRecord
from tracekit.recorder.reprobe import Probe, reprobe
from tracekit.recorder.scenario import ScenarioError, Step

HOST = "netns0"
SO_INCOMING_CPU, SO_ATTACH_REUSEPORT_CBPF, SO_DETACH_REUSEPORT_BPF = 49, 51, 68
SOCKOPTS = {
    "SO_REUSEPORT": (socket.SOL_SOCKET, socket.SO_REUSEPORT),
    "SO_REUSEADDR": (socket.SOL_SOCKET, socket.SO_REUSEADDR),
    "SO_INCOMING_CPU": (socket.SOL_SOCKET, SO_INCOMING_CPU),
    "IPV6_V6ONLY": (socket.IPPROTO_IPV6, socket.IPV6_V6ONLY),
    "SO_ATTACH_REUSEPORT_CBPF": (socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF),
    "SO_DETACH_REUSEPORT_BPF": (socket.SOL_SOCKET, SO_DETACH_REUSEPORT_BPF),
}
SHUTDOWN_HOW = {"rd": socket.SHUT_RD, "wr": socket.SHUT_WR, "rdwr": socket.SHUT_RDWR}
PROTO = {"tcp": (socket.SOCK_STREAM, socket.IPPROTO_TCP), "udp": (socket.SOCK_DGRAM, socket.IPPROTO_UDP)}
TCP_INFO_UNACKED = 24  # struct tcp_info: on a listener, tcpi_unacked is the accept queue length
SETTLE_S = 0.5
UDP_SETTLE_S = 0.05  # loopback delivers within sendto(); only a dropped datagram waits this long


class RecordError(ScenarioError):
    """The kernel did something the recorder cannot account for, or a step cannot run."""


@dataclass
class ServerSock:
    sk: int
    name: str
    sock: socket.socket
    proto: str
    family: int
    port: int | None = None
    addr: str | None = None
    listening: bool = False
    closed: bool = False
    has_program: bool = False


@dataclass
class Outcomes:
    """What each labelled step led to: flows in send order, or an operation's returns; and where
    each flow's sends ended up, in order (a socket name or "reset")."""

    flows: dict[str, list[tuple[Flow, int]]] = field(default_factory=lambda: defaultdict(list))  # (flow, nth send of it)
    cpus: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    rets: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    delivered: dict[Flow, list[str]] = field(default_factory=lambda: defaultdict(list))


def _errno_ret(err: OSError) -> int:
    return -(err.errno or errno.EIO)


def _attempt(action, *args) -> int:
    """Run a socket call; its result as the trace's `ret`: 0 or -errno."""
    try:
        action(*args)
    except OSError as err:
        return _errno_ret(err)
    return 0


class Session:
    def __init__(self, observe: bool = True) -> None:
        self.rows: list[dict[str, Any]] = []
        self.socks: dict[str, ServerSock] = {}
        self.observer = Observer() if observe else None
        self.program_ports: set[tuple[str, int]] = set()
        self.unseen: list[tuple[dict[str, Any], Probe]] = []  # rows the observer could not give a hash
        self.wildcard_syns: list[tuple[dict[str, Any], Probe]] = []  # syn rows that need their sk_hash
        self.witnesses: list[Probe] = []  # a few flows it did, to check the re-probe against
        self.records: dict[tuple, deque[SelectionRecord]] = defaultdict(deque)
        self.pending_tcp: dict[Flow, socket.socket] = {}
        # datagrams sent and not yet read, by source: (flow, nth send of the flow, payload)
        self.pending_udp: dict[tuple[str, int], deque[tuple[Flow, int, bytes]]] = defaultdict(deque)
        self.outcomes = Outcomes()
        self.sent_count: dict[Flow, int] = defaultdict(int)
        self.ncpu = len(os.sched_getaffinity(0))
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    # -- events ---------------------------------------------------------------------------------
    def emit(self, event: str, **columns: Any) -> None:
        row = {"host": HOST, "seq": len(self.rows), "ts_ns": time.monotonic_ns(), "event": event}
        row.update({k: v for k, v in columns.items() if v is not None})
        self.rows.append(row)

    def pin(self, cpu: int | None) -> int:
        cpu = 0 if cpu is None else int(cpu)
        if not 0 <= cpu < self.ncpu:
            raise RecordError(f"cpu {cpu} does not exist here (CPUs 0..{self.ncpu - 1})")
        os.sched_setaffinity(0, {cpu})
        return cpu

    # -- steps ------------------------------------------------------------------------------------
    def run(self, step: Step) -> None:
        handler = getattr(self, f"op_{step.op}")
        if step.op in ("clients", "datagrams", "sysctl", "ebpf"):
            handler(step)
        else:
            for name in step.socks():
                handler(step, name)

    def sock(self, name: str) -> ServerSock:
        if name not in self.socks:
            raise RecordError(f"step uses socket {name!r} before creating it")
        return self.socks[name]

    def _ret(self, step: Step, ret: int) -> int:
        if step.label:
            self.outcomes.rets[step.label].append(ret)
        return ret

    def op_sysctl(self, step: Step) -> None:
        name, value = step.args["name"], int(step.args["value"])
        ret = netns.write_sysctl(name, value)
        self.emit("sysctl", name=name, value=value, ret=self._ret(step, ret))

    def op_socket(self, step: Step, name: str) -> None:
        if name in self.socks and not self.socks[name].closed:
            raise RecordError(f"socket {name!r} already exists")
        proto, family = step.args.get("proto", "tcp"), int(step.args.get("family", 4))
        kind, ipproto = PROTO[proto]
        sock = socket.socket(socket.AF_INET if family == 4 else socket.AF_INET6, kind, ipproto)
        self.socks[name] = ServerSock(len(self.socks), name, sock, proto, family)
        self.emit("socket", sk=self.socks[name].sk, proto=proto, family=family)

    def op_setsockopt(self, step: Step, name: str) -> None:
        s, opt = self.sock(name), step.args["name"]
        if opt not in SOCKOPTS:
            raise RecordError(f"unsupported socket option {opt!r} (one of {', '.join(SOCKOPTS)})")
        level, optname = SOCKOPTS[opt]
        prog = None
        value = int(step.args.get("value", 1))
        try:
            if opt == "SO_ATTACH_REUSEPORT_CBPF":
                raw = step.args["prog"]
                prog = cbpf.program_bytes(cbpf.named_program(raw) if isinstance(raw, str) else [tuple(i) for i in raw])
                fprog = cbpf.SockFprog(prog)  # must outlive the call: the kernel reads its filter pointer
                s.sock.setsockopt(level, optname, fprog.value)
                value = None
                s.has_program = True
            else:
                s.sock.setsockopt(level, optname, value)
            ret = 0
        except OSError as err:
            ret = _errno_ret(err)
        if ret == 0 and s.has_program and s.port is not None:
            self.program_ports.add((s.proto, s.port))
        if ret == 0 and opt == "SO_DETACH_REUSEPORT_BPF":
            # the group stays unobserved: re-attaching the observer would make a second detach succeed
            s.has_program = False
        self.emit("setsockopt", sk=s.sk, name=opt, value=value, prog=prog, ret=self._ret(step, ret))

    def op_ebpf(self, step: Step) -> None:
        """Attach a hand-assembled steering program (tracekit.recorder.steering) to the group of
        `socks`, its REUSEPORT_SOCKARRAY holding socks[i] at index i, through the first socket.
        It replaces the observer on that group: the group's hashes come from the re-probe."""
        group = [self.sock(name) for name in step.socks()]
        first = group[0]
        if any(s.closed or s.port is None or (s.proto, s.port) != (first.proto, first.port) for s in group):
            raise RecordError(f"ebpf: sockets {step.socks()} must be open, bound and of one group (protocol and port)")
        program = step.args["program"]
        try:
            loaded = steering.load_steering(program, [s.sock for s in group])
        except steering.bpf_syscall.BpfError as err:
            raise RecordError(f"ebpf: {err} (a sockarray takes bound UDP sockets and listening TCP sockets with SO_REUSEPORT)") from None
        try:
            ret = _attempt(steering.attach, loaded, first.sock)
        finally:
            loaded.close()  # the attached program holds its own references to itself and its map
        if ret == 0:
            first.has_program = True
            self.program_ports.add((first.proto, first.port))
        self.emit("setsockopt", sk=first.sk, name="SO_ATTACH_REUSEPORT_EBPF", value=steering.BPF_SK_REUSEPORT_SELECT,
                  prog=program.encode(), ret=self._ret(step, ret))

    def op_bind(self, step: Step, name: str) -> None:
        s = self.sock(name)
        addr, port = step.args.get("addr", "0.0.0.0" if s.family == 4 else "::"), int(step.args["port"])
        ret = rawaddr.call(s.sock, "bind", addr, port)
        self.emit("bind", sk=s.sk, laddr=plain_address(addr), lport=port, ret=self._ret(step, ret))
        if ret == 0:
            s.port, s.addr = port, plain_address(addr)
            if s.has_program:
                self.program_ports.add((s.proto, port))
            if s.proto == "udp":
                self._observe(s)

    def op_listen(self, step: Step, name: str) -> None:
        s = self.sock(name)
        ret = _attempt(s.sock.listen, int(step.args.get("backlog", 1024)))
        self.emit("listen", sk=s.sk, ret=self._ret(step, ret))
        if ret == 0:
            s.listening = True
            self._observe(s)

    def _observe(self, s: ServerSock) -> None:
        """Attach the observer to this socket's group unless the scenario gave the group a program."""
        if self.observer is None or (s.proto, s.port) in self.program_ports:
            return
        try:
            self.observer.attach(s.sock)
        except OSError:
            pass  # no reuseport group (SO_REUSEPORT off): the kernel runs no selection to observe

    def op_connect(self, step: Step, name: str) -> None:
        s = self.sock(name)
        addr, port = step.args["addr"], int(step.args["port"])
        ret = rawaddr.call(s.sock, "connect", addr, port)
        self.emit("connect", sk=s.sk, raddr=plain_address(addr), rport=port, ret=self._ret(step, ret))

    def op_shutdown(self, step: Step, name: str) -> None:
        s = self.sock(name)
        how = step.args.get("how", "rdwr")
        how = SHUTDOWN_HOW[how] if isinstance(how, str) else int(how)
        self._stop_listener(s, step, lambda: s.sock.shutdown(how), "shutdown", value=how)
        if s.listening and how in (socket.SHUT_RD, socket.SHUT_RDWR):
            s.listening = False

    def op_close(self, step: Step, name: str) -> None:
        s = self.sock(name)
        self._stop_listener(s, step, s.sock.close, "close")
        s.listening, s.closed = False, True

    def _stop_listener(self, s: ServerSock, step: Step, action, event: str, value: int | None = None) -> None:
        """Close or shut down `s`; if that stops a listener, observe the resets of its queue that
        did not migrate. inet_shutdown() stops a listener only for RCV_SHUTDOWN (SHUT_RD,
        SHUT_RDWR): SHUT_WR leaves it listening with its queue."""
        cpu = self.pin(step.args.get("cpu"))
        stops = event == "close" or value in (socket.SHUT_RD, socket.SHUT_RDWR)
        queued = self._queue_length(s) if s.listening and stops else 0
        migrated_before = netns.read_mib().get("TCPMigrateReqSuccess", 0)
        ret = _attempt(action)
        columns = {"value": value} if event == "shutdown" else {}
        self.emit(event, sk=s.sk, cpu=cpu, ret=self._ret(step, ret), **columns)
        if queued:
            migrated = netns.read_mib().get("TCPMigrateReqSuccess", 0) - migrated_before
            self._observe_resets(queued - migrated)

    def _queue_length(self, s: ServerSock) -> int:
        info = s.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
        return struct.unpack_from("I", info, TCP_INFO_UNACKED)[0]

    def _observe_resets(self, expected: int, *, final: bool = False) -> None:
        """Emit `reset` for connections the kernel reset; wait until `expected` are seen."""
        deadline = time.monotonic() + SETTLE_S
        seen = 0
        while True:
            for flow, client in list(self.pending_tcp.items()):
                if client.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == errno.ECONNRESET:
                    self._deliver(flow, "reset")
                    self.emit("reset", proto="tcp", family=family_of(flow.laddr), **flow.columns())
                    client.close()
                    del self.pending_tcp[flow]
                    seen += 1
            if seen >= expected or time.monotonic() > deadline:
                break
            time.sleep(0.001)
        if seen < expected and not final:
            raise RecordError(f"expected {expected} connection reset(s) after a listener stopped, saw {seen}")

    def _deliver(self, flow: Flow, where: str, nth: int | None = None) -> None:
        """The next (or the `nth`) send of `flow` ended up `where`."""
        got = self.outcomes.delivered[flow]
        if nth is None:
            got.append(where)
            return
        got.extend(["nowhere"] * (nth + 1 - len(got)))
        got[nth] = where

    def op_open(self, step: Step, name: str) -> None:
        args = step.args
        proto = args.get("proto", "tcp")
        sub = lambda op, **kw: Step(op, kw, step.label)  # noqa: E731
        self.op_socket(sub("socket", proto=proto, family=args.get("family", family_of(args.get("addr", "0.0.0.0")))), name)
        options = ({"SO_REUSEPORT": 1} if args.get("reuseport", True) else {}) | dict(args.get("options", {}))
        for opt, value in options.items():
            opt_args = {"name": opt, "prog": value} if opt == "SO_ATTACH_REUSEPORT_CBPF" else {"name": opt, "value": value}
            self.op_setsockopt(sub("setsockopt", **opt_args), name)
        bind_args = {"port": args["port"]} | ({"addr": args["addr"]} if "addr" in args else {})
        self.op_bind(sub("bind", **bind_args), name)
        if proto == "tcp" and args.get("listen", True):
            self.op_listen(sub("listen", backlog=args.get("backlog", 1024)), name)

    # -- traffic ----------------------------------------------------------------------------------
    def _cpus(self, step: Step, count: int) -> list[int]:
        cpu = step.args.get("cpu", 0)
        if cpu == "all":
            cpu = list(range(self.ncpu))
        cpus = cpu if isinstance(cpu, list) else [cpu]
        return [int(cpus[i % len(cpus)]) for i in range(count)]

    def _selection(self, proto: int, flow: Flow) -> SelectionRecord | None:
        if self.observer is not None:
            for record in self.observer.drain():
                key = (record.ip_protocol, record.saddr, record.sport, record.daddr, record.dport)
                self.records[key].append(record)
        queue = self.records.get((proto, flow.raddr, flow.rport, flow.laddr, flow.lport))
        if not queue:
            return None
        first = queue.popleft()
        queue.clear()  # retransmits and repeated lookups of the same flow carry the same hash
        return first

    def op_clients(self, step: Step) -> None:
        addr, port = step.args["addr"], int(step.args["port"])
        family = family_of(addr)
        # fixed source ports repeat flows (and so their hashes) later in the same namespace
        src_ports = step.args.get("src_ports") or [0]
        for i, cpu in enumerate(self._cpus(step, int(step.args.get("count", 1)))):
            self.pin(cpu)
            client = socket.socket(socket.AF_INET if family == 4 else socket.AF_INET6, socket.SOCK_STREAM)
            if src_ports != [0]:
                client.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            client.bind(("127.0.0.1" if family == 4 else "::1", int(src_ports[i % len(src_ports)])))
            flow = Flow.of(addr, port, client.getsockname()[0], client.getsockname()[1])
            try:
                client.connect((addr, port))
                refused = False
            except OSError as err:
                if err.errno != errno.ECONNREFUSED:
                    raise RecordError(f"connecting to {addr}:{port} failed: {err.strerror}") from None
                refused = True
            record = self._selection(socket.IPPROTO_TCP, flow)
            self._sent(step, flow, cpu)
            self.emit("syn", proto="tcp", family=family, hash=_hash(record), cpu=_cpu(record, cpu), **flow.columns())
            if not refused:
                self._note("tcp", port, flow, record)
            if refused:
                self._deliver(flow, "reset")
                self.emit("reset", proto="tcp", family=family, **flow.columns())
                client.close()
            else:
                self.pending_tcp[flow] = client

    def _note(self, proto: str, port: int, flow: Flow, record: SelectionRecord | None, witnesses: int = 4) -> None:
        """Remember the row just emitted for reprobe_unseen(): unseen if its group runs (or ran) a
        program instead of the observer; a syn to a wildcard group needs its `sk_hash` (the hash
        over the flow's own destination); a witness if the observer saw it."""
        bound = self._bound(proto, flow)
        if bound is None:
            return
        if proto == "tcp" and bound != flow.laddr:
            self.wildcard_syns.append((self.rows[-1], Probe(proto, flow, flow.laddr)))
        if record is None and (proto, port) in self.program_ports:
            self.unseen.append((self.rows[-1], Probe(proto, flow, bound)))
        elif record is not None and len(self.witnesses) < witnesses and all(
            (w.proto, w.bound, w.flow.lport) != (proto, bound, port) for w in self.witnesses
        ):
            self.witnesses.append(Probe(proto, flow, bound, record.hash))

    def _bound(self, proto: str, flow: Flow) -> str | None:
        """The address of the group the kernel looks the flow up in (a socket bound to the flow's
        destination is found before a wildcard one), or None if no socket can receive it."""
        wildcard = "0.0.0.0" if family_of(flow.laddr) == 4 else "::"
        live = {s.addr for s in self.socks.values() if s.proto == proto and s.port == flow.lport and not s.closed and (s.listening or proto == "udp")}
        if flow.laddr in live:
            return flow.laddr
        return wildcard if live & {"0.0.0.0", "::"} else None

    def _sent(self, step: Step, flow: Flow, cpu: int) -> None:
        occurrence = self.sent_count[flow]
        self.sent_count[flow] += 1
        if step.label:
            self.outcomes.flows[step.label].append((flow, occurrence))
            self.outcomes.cpus[step.label].append(cpu)

    def op_datagrams(self, step: Step) -> None:
        addr, port = step.args["addr"], int(step.args["port"])
        family = family_of(addr)
        count = int(step.args.get("count", 1))
        src_ports = step.args.get("src_ports") or [step.args.get("src_port", 0)]
        sent = 0
        for i, cpu in enumerate(self._cpus(step, count)):
            self.pin(cpu)
            payload = _payload(step.args.get("payload"), i)
            with socket.socket(socket.AF_INET if family == 4 else socket.AF_INET6, socket.SOCK_DGRAM) as client:
                client.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                client.bind(("127.0.0.1" if family == 4 else "::1", int(src_ports[i % len(src_ports)])))
                flow = Flow.of(addr, port, client.getsockname()[0], client.getsockname()[1])
                client.sendto(payload, (addr, port))
            record = self._selection(socket.IPPROTO_UDP, flow)
            nth = self.sent_count[flow]
            self._sent(step, flow, cpu)
            self.emit(
                "datagram", proto="udp", family=family, hash=_hash(record), cpu=_cpu(record, cpu), payload=payload, **flow.columns()
            )
            self._note("udp", port, flow, record)
            self.pending_udp[(flow.raddr, flow.rport)].append((flow, nth, payload))
            sent += 1
        self._receive(sent)

    def _receive(self, expected: int) -> None:
        """Read every queued datagram from every UDP socket, socket by socket, one `recv` observation
        each with the bytes read."""
        deadline = time.monotonic() + UDP_SETTLE_S
        got = 0
        while True:
            for s in self.socks.values():
                if s.proto != "udp" or s.closed:
                    continue
                while True:
                    try:
                        data, peer = s.sock.recvfrom(65536, socket.MSG_DONTWAIT)
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError:
                        break  # an ICMP error queued on a connected socket
                    source = (plain_address(peer[0]), peer[1])
                    if not self.pending_udp[source]:
                        raise RecordError(f"socket {s.name} received a datagram from {source} that was never sent")
                    flow, nth = _received(self.pending_udp[source], data)
                    self._deliver(flow, s.name, nth)
                    self.emit("recv", sk=s.sk, proto="udp", family=family_of(flow.laddr), payload=data, **flow.columns())
                    got += 1
            if got >= expected or time.monotonic() > deadline:
                return
            time.sleep(0.001)

    def op_accept(self, step: Step, name: str) -> None:
        s = self.sock(name)
        limit = step.args.get("count", "all")
        self._accept(s, None if limit == "all" else int(limit))

    def _accept(self, s: ServerSock, limit: int | None) -> None:
        s.sock.setblocking(False)
        accepted = 0
        while limit is None or accepted < limit:
            try:
                conn, peer = s.sock.accept()
            except (BlockingIOError, InterruptedError):
                break
            except OSError as err:
                if err.errno == errno.EINVAL:
                    break  # not listening
                raise
            local = conn.getsockname()
            conn.close()
            flow = Flow.of(local[0], local[1], peer[0], peer[1])
            client = self.pending_tcp.pop(flow, None)
            if client is None:
                raise RecordError(f"socket {s.name} accepted {flow}, which the recorder never connected")
            client.close()
            self._deliver(flow, s.name)
            self.emit("accept", sk=s.sk, proto="tcp", family=family_of(flow.laddr), **flow.columns())
            accepted += 1
        s.sock.setblocking(True)

    def finish(self) -> None:
        """Account for every connection: accept what is queued anywhere, observe the resets."""
        self._receive(0)
        deadline = time.monotonic() + SETTLE_S
        while self.pending_tcp:
            for s in self.socks.values():
                if s.proto == "tcp" and s.listening and not s.closed:
                    self._accept(s, None)
            self._observe_resets(0, final=True)
            if self.pending_tcp and time.monotonic() > deadline:
                raise RecordError(f"{len(self.pending_tcp)} connection(s) were neither accepted nor reset: {list(self.pending_tcp)[:3]}")
        for s in self.socks.values():
            if not s.closed:
                s.sock.close()

    def reprobe_unseen(self) -> Reprobed:
        """After finish(): fill in the `hash` of rows the observer could not see and the `sk_hash`
        of syns to wildcard groups by sending their flows again (see tracekit.recorder.reprobe),
        with a few observed flows as witnesses."""
        if self.observer is None or not (self.unseen or self.wildcard_syns):
            return Reprobed(0, len(self.unseen), 0, len(self.wildcard_syns))
        probes = [probe for _, probe in self.unseen + self.wildcard_syns] + self.witnesses
        hashes = reprobe(self.observer, probes)
        hash_filled = _fill(self.unseen, "hash", hashes)
        sk_hash_filled = _fill(self.wildcard_syns, "sk_hash", hashes)
        return Reprobed(hash_filled, len(self.unseen) - hash_filled, sk_hash_filled, len(self.wildcard_syns) - sk_hash_filled)


@dataclass(frozen=True)
class Reprobed:
    """How many rows re-probing gave a `hash` / an `sk_hash`, and how many it could not."""

    hash: int
    hash_unresolved: int
    sk_hash: int
    sk_hash_unresolved: int


def _fill(rows: list[tuple[dict[str, Any], Probe]], column: str, hashes: dict) -> int:
    filled = 0
    for row, probe in rows:
        found = hashes.get((probe.proto, probe.bound, probe.flow))
        if found is not None:
            row[column] = found
            filled += 1
    return filled


def _hash(record: SelectionRecord | None) -> int | None:
    return None if record is None else record.hash


def _received(pending: deque[tuple[Flow, int, bytes]], data: bytes) -> tuple[Flow, int]:
    """The send a datagram read back is: the oldest pending one with its bytes (one flow's
    datagrams can sit on several sockets, read in socket order), else the oldest."""
    index = next((i for i, (_flow, _nth, sent) in enumerate(pending) if sent == data), 0)
    flow, nth, _payload = pending[index]
    del pending[index]
    return flow, nth


def _cpu(record: SelectionRecord | None, pinned: int) -> int:
    return pinned if record is None else record.cpu


def _payload(spec: Any, index: int) -> bytes:
    """`payload` of a datagrams step: a hex string, `index` (the datagram's number as a 32-bit
    big-endian word, as reuseport_bpf.c sends), or absent (one byte)."""
    if spec is None:
        return b"x"
    if spec == "index":
        return struct.pack("!I", index)
    if isinstance(spec, list):
        return bytes.fromhex(spec[index % len(spec)])
    return bytes.fromhex(spec)
