"""`probe()`: run bpftrace, turn its records into trace rows, stream them into a Parquet trace.

bpftrace prints each CPU's records as it reads that CPU's buffer, so lines of different CPUs
arrive out of time order. Records wait in a reorder buffer until they are `REORDER_NS` old (by
the kernel's CLOCK_MONOTONIC, which is Python's `time.monotonic_ns()` too), then leave it in
timestamp order; that is the order of the trace's `seq`. bpftrace's "Lost N events" makes the
translator forget every socket id (see `tracekit.probe.translate`): what follows is judged as if
the probe had started then.

The trace is written through `tracekit.trace.write_trace` (a temporary file renamed into place
when complete), so memory stays bounded and an interrupted run leaves no file; SIGINT and
SIGTERM end the capture early and still finalize the file.
"""

from __future__ import annotations

import heapq
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tracekit.errors import TracekitError
from tracekit.probe.lines import Assembler, Attached, Lost, ProbeOutputError, Record, parse_line
from tracekit.probe.preflight import ProbeUnavailable, check_probe_support
from tracekit.probe.script import bpftrace_program
from tracekit.probe.translate import Translator

__all__ = ["probe", "capture_with", "ProbeStats", "REORDER_NS", "ATTACH_TIMEOUT_S"]

REORDER_NS = 300_000_000
ATTACH_TIMEOUT_S = 900.0
"""bpftrace compiles and loads at start; under emulation (TCG guests) that takes minutes."""
STOP_TIMEOUT_S = 120.0
"""bpftrace detaches its probes on SIGINT; after this long it is killed (the trace keeps what it read)."""
BUFFER_PAGES = 1024
"""Pages of each CPU's perf buffer (`BPFTRACE_PERF_RB_PAGES`): more pages, fewer lost events."""
MAP_KEYS = 65536


@dataclass
class ProbeStats:
    """What a probe run saw; `live()` renders the live line."""

    started: float = field(default_factory=time.monotonic)
    records: int = 0
    rows: int = 0
    lost: int = 0
    attached_probes: int = 0
    ready_after_s: float | None = None
    _window_start: float = field(default_factory=time.monotonic)
    _window_rows: int = 0
    rate: float = 0.0

    def tick(self) -> None:
        now = time.monotonic()
        if now - self._window_start >= 1.0:
            self.rate = (self.rows - self._window_rows) / (now - self._window_start)
            self._window_start, self._window_rows = now, self.rows

    def live(self) -> str:
        seconds = time.monotonic() - self.started
        return (f"probe: {self.rows:,} events, {self.rate:,.0f} events/s, {self.lost:,} lost, "
                f"{seconds:,.0f} s")


def probe(output: str | os.PathLike[str], *, duration: float | None = None,
          ports: tuple[int, ...] = (), netns: str | os.PathLike[str] | None = None,
          on_ready: Callable[[ProbeStats], None] | None = None,
          on_tick: Callable[[ProbeStats], None] | None = None,
          stop: threading.Event | None = None, bpftrace: str | None = None,
          command: str | None = None) -> ProbeStats:
    """Capture reuseport decisions of the running kernel into the trace `output`.

    Runs until `duration` seconds have passed since the probes attached, `stop` is set, SIGINT or
    SIGTERM arrives (in the main thread), or bpftrace ends. `ports` keeps only groups on those
    local ports; `netns` (a path such as /proc/PID/ns/net or /run/netns/NAME) only that network
    namespace (default: all, one trace host each). `on_ready` is called once the probes are
    attached, `on_tick` about once a second. Raises `ProbeUnavailable` (what is missing) when
    the kernel cannot be probed; nothing is written then.
    """
    binary = check_probe_support(bpftrace=bpftrace)
    return capture_with(binary, output, duration=duration, ports=ports, netns=netns,
                        on_ready=on_ready, on_tick=on_tick, stop=stop, command=command)


def capture_with(binary: str, output: str | os.PathLike[str], *, duration: float | None = None,
                 ports: tuple[int, ...] = (), netns: str | os.PathLike[str] | None = None,
                 on_ready: Callable[[ProbeStats], None] | None = None,
                 on_tick: Callable[[ProbeStats], None] | None = None,
                 stop: threading.Event | None = None, command: str | None = None) -> ProbeStats:
    """`probe()` with `binary` as bpftrace and no check of the kernel first: whatever prints
    bpftrace's output for `script.bpftrace_program()` (the tests use a stand-in where the kernel
    has no kprobes)."""
    output = Path(output)
    netns_ids = frozenset([_netns_inode(netns)]) if netns is not None else frozenset()
    translator = Translator(node=os.uname().nodename, ports=frozenset(ports), netns=netns_ids)
    stats = ProbeStats()
    stop = stop or threading.Event()
    metadata = {
        "tracekit.kernel": os.uname().release,
        "tracekit.kernel.version": os.uname().version,  # names a distribution's stable release
        "tracekit.command": command or "tracekit.probe.probe()",
        "tracekit.probe.tool": _bpftrace_version(binary),
    }
    if ports:
        metadata["tracekit.probe.ports"] = ",".join(map(str, sorted(set(ports))))
    if netns is not None:
        metadata["tracekit.probe.netns"] = f"{netns} (inode {next(iter(netns_ids))})"
    from tracekit.trace import write_trace

    session = _Session(binary, translator, stats, stop, duration, on_ready, on_tick)
    with _signals_stop(stop):
        write_trace(output, session.rows(), metadata, source="probe",
                    late_metadata=lambda: session.final_metadata())
    return stats


def _netns_inode(path: str | os.PathLike[str]) -> int:
    try:
        return os.stat(path).st_ino
    except OSError as error:
        raise TracekitError(f"--netns {path}: {error.strerror}") from None


def _bpftrace_version(binary: str) -> str:
    try:
        done = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30)
        return done.stdout.strip() or binary
    except (OSError, subprocess.SubprocessError):
        return binary


class _signals_stop:
    """While active (in the main thread), SIGINT and SIGTERM set `stop` instead of killing."""

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop
        self.saved: dict[int, Any] = {}

    def __enter__(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for number in (signal.SIGINT, signal.SIGTERM):
            self.saved[number] = signal.signal(number, lambda *_: self.stop.set())

    def __exit__(self, *exc: object) -> None:
        for number, handler in self.saved.items():
            signal.signal(number, handler)


class _Session:
    """One bpftrace process and the rows made of its output."""

    def __init__(self, binary: str, translator: Translator, stats: ProbeStats,
                 stop: threading.Event, duration: float | None,
                 on_ready: Callable[[ProbeStats], None] | None,
                 on_tick: Callable[[ProbeStats], None] | None) -> None:
        self.binary, self.translator, self.stats, self.stop = binary, translator, stats, stop
        self.duration, self.on_ready, self.on_tick = duration, on_ready, on_tick
        self.lines: queue.Queue[str | None] = queue.Queue(maxsize=1 << 16)
        self.heap: list[tuple[int, int, Record]] = []
        self.order = 0
        self.assembler = Assembler()
        self.ready_at: float | None = None
        self.stderr = ""

    def final_metadata(self) -> dict[str, str]:
        s = self.stats
        meta = {"tracekit.probe.lost_events": str(s.lost),
                "tracekit.probe.records": str(s.records),
                "tracekit.probe.seconds": f"{time.monotonic() - (self.ready_at or s.started):.3f}"}
        if self.translator.dropped_programs:
            meta["tracekit.probe.unread_programs"] = str(self.translator.dropped_programs)
        return meta

    def rows(self) -> Iterator[dict[str, Any]]:
        with tempfile.TemporaryDirectory(prefix="tracekit-probe-") as scratch:
            program = Path(scratch) / "reuseport.bt"
            program.write_text(bpftrace_program())
            env = dict(os.environ, BPFTRACE_MAP_KEYS_MAX=str(MAP_KEYS),
                       BPFTRACE_PERF_RB_PAGES=str(BUFFER_PAGES))
            err_path = Path(scratch) / "stderr"
            with open(err_path, "w+") as err:
                process = subprocess.Popen([self.binary, "-B", "none", str(program)],
                                           stdout=subprocess.PIPE, stderr=err, text=True, env=env,
                                           start_new_session=True)
                reader = threading.Thread(target=self._read, args=(process,), daemon=True)
                reader.start()
                try:
                    yield from self._drive(process)
                finally:
                    if process.poll() is None:
                        process.kill()
                    process.wait()
                    err.seek(0)
                    self.stderr = err.read()
                if self.ready_at is None:
                    raise ProbeUnavailable("bpftrace did not attach its probes: "
                                           + (_last_lines(self.stderr) or f"exit status {process.returncode}"))

    def _read(self, process: subprocess.Popen) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def _drive(self, process: subprocess.Popen) -> Iterator[dict[str, Any]]:
        stopping: float | None = None
        deadline: float | None = None
        last_tick = time.monotonic()
        while True:
            try:
                line = self.lines.get(timeout=0.1)
            except queue.Empty:
                line = ""
            if line is None:
                break
            if line:
                yield from self._line(line)
            now = time.monotonic()
            if self.ready_at is not None and deadline is None and self.duration is not None:
                deadline = self.ready_at + self.duration
            if stopping is None and (self.stop.is_set() or (deadline is not None and now >= deadline)):
                stopping = now
                if process.poll() is None:
                    process.send_signal(signal.SIGINT)  # bpftrace prints what it has and exits
            elif stopping is not None and now - stopping > STOP_TIMEOUT_S and process.poll() is None:
                process.kill()
            if self.ready_at is None and now - self.stats.started > ATTACH_TIMEOUT_S:
                raise ProbeUnavailable(f"bpftrace did not attach within {ATTACH_TIMEOUT_S:.0f} s")
            if now - last_tick >= 0.5:
                last_tick = now
                yield from self._release(time.monotonic_ns() - REORDER_NS)
                self.stats.tick()
                if self.on_tick is not None and self.ready_at is not None:
                    self.on_tick(self.stats)
        for record in self.assembler.flush():
            self._push(record)
        yield from self._release(None)
        self.stats.tick()

    def _line(self, line: str) -> Iterator[dict[str, Any]]:
        try:
            item = parse_line(line)
        except ProbeOutputError as error:
            raise TracekitError(f"bpftrace printed a line tracekit cannot read: {error}") from None
        if item is None:
            return
        if isinstance(item, Lost):
            self.stats.lost += item.count
            # every record still waiting may come from before the loss: ids start over first
            self.translator.ids.forget_all()
            return
        if isinstance(item, Attached):
            self.stats.attached_probes = item.probes
            return
        if item.code == "B":
            self.ready_at = time.monotonic()
            self.stats.ready_after_s = self.ready_at - self.stats.started
            if self.on_ready is not None:
                self.on_ready(self.stats)
            return
        self.stats.records += 1
        for record in self.assembler.feed(item):
            self._push(record)
        if len(self.heap) > 1 << 18:  # a burst: keep memory bounded, oldest first
            yield from self._release(self.heap[0][0] + 1)

    def _push(self, record: Record) -> None:
        self.order += 1
        heapq.heappush(self.heap, (record.ts, self.order, record))

    def _release(self, before_ns: int | None) -> Iterator[dict[str, Any]]:
        heap = self.heap
        while heap and (before_ns is None or heap[0][0] < before_ns):
            _, _, record = heapq.heappop(heap)
            rows = self.translator.rows(record)
            self.stats.rows += len(rows)
            yield from rows


def _last_lines(text: str, n: int = 8) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return " | ".join(lines[-n:])


def _print_live(stats: ProbeStats) -> None:  # pragma: no cover - used by the CLI on a terminal
    sys.stderr.write("\r" + stats.live() + " " * 8)
    sys.stderr.flush()
