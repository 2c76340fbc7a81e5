"""Small traces built with `write_trace`, and the hash that lands in a given slot."""

from __future__ import annotations

from pathlib import Path

from tracekit.kernel.sock_reuseport import reciprocal_scale
from tracekit.trace import write_trace


def slot_hash(slot: int, n: int, salt: int = 0) -> int:
    h = -(-(slot << 32) // n) + salt
    assert reciprocal_scale(h, n) == slot
    return h


class TraceBuilder:
    def __init__(self, host: str = "h1") -> None:
        self.host = host
        self.rows: list[dict] = []

    def add(self, event: str, **cols) -> TraceBuilder:
        self.rows.append({"host": self.host, "seq": len(self.rows) + 1, "event": event, **cols})
        return self

    def tcp_listeners(self, sks, addr: str = "127.0.0.1", port: int = 8080) -> TraceBuilder:
        for sk in sks:
            self.add("socket", sk=sk, proto="tcp", family=4)
            self.add("setsockopt", sk=sk, name="SO_REUSEPORT", value=1, ret=0)
            self.add("bind", sk=sk, laddr=addr, lport=port, ret=0)
            self.add("listen", sk=sk, ret=0)
        return self

    def conn(self, rport: int, hash: int | None, cpu: int = 0, laddr: str = "127.0.0.1",
             lport: int = 8080) -> TraceBuilder:
        return self.add("syn", proto="tcp", laddr=laddr, lport=lport, raddr="127.0.0.1",
                        rport=rport, hash=hash, cpu=cpu, payload=b"")

    def accept(self, sk: int, rport: int, laddr: str = "127.0.0.1", lport: int = 8080):
        return self.add("accept", sk=sk, proto="tcp", laddr=laddr, lport=lport,
                        raddr="127.0.0.1", rport=rport)

    def write(self, path: Path, kernel: str | None = "6.18.0", complete: bool = False) -> Path:
        meta = {"tracekit.kernel": kernel} if kernel else {}
        if complete:
            meta["tracekit.observations"] = "complete"
        return write_trace(path, self.rows, meta, source="test")
