"""What `tracekit probe` costs: overhead per selection, and the largest event rate without loss.

Boots a guest kernel (`tracekit.vmlab`, QEMU TCG: absolute times are those of an emulated CPU,
many times slower than hardware; the ratios are what carry over) and, inside it, drives UDP
datagrams at a reuseport group of 4 sockets on 127.0.0.1 (every `sendto()` on loopback runs the
receive path, so one selection, synchronously):

1. without the probe: N datagrams as fast as one sender goes -> time per datagram (anchor);
2. with the probe attached: the same -> time per datagram; the difference is the probe's
   overhead per selection (kprobe + kretprobe + bpftrace's printf record);
3. with the probe, paced steps of rising rate (datagrams/s) for STEP_S seconds each: afterwards
   the trace's selections in each step's time window are counted against the datagrams sent.
   The largest step with every selection captured is the rate the probe sustains without loss.

    python benchmarks/probe_bench.py                 # the 6.1 guest
    python benchmarks/probe_bench.py --kernel 6.12

The guest side is `python benchmarks/probe_bench.py load ...` (run by the benchmark, not by hand).
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PORT = 7400
GROUP = 4
FAST_N = 20_000
RATES = (500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000)
STEP_S = 4.0


# -- in the guest -------------------------------------------------------------------------------
def _group() -> tuple[list[socket.socket], socket.socket]:
    members = []
    for _ in range(GROUP):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
        s.bind(("127.0.0.1", PORT))
        members.append(s)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    return members, sender


def load(mode: str, n: int, out: str) -> None:
    """`fast`: n datagrams back to back; `steps`: the paced RATES, STEP_S seconds each."""
    members, sender = _group()
    payload, target = b"x", ("127.0.0.1", PORT)
    results = []
    if mode == "fast":
        best = None
        for _ in range(3):
            start = time.perf_counter()
            for _ in range(n):
                sender.sendto(payload, target)
            took = time.perf_counter() - start
            best = took if best is None else min(best, took)
        results.append({"mode": "fast", "sent": n, "seconds": best})
    else:
        for rate in RATES:
            count = int(rate * STEP_S)
            begin_ns = time.monotonic_ns()
            start = time.perf_counter()
            for i in range(count):
                sender.sendto(payload, target)
                ahead = (i + 1) / rate - (time.perf_counter() - start)
                if ahead > 0.0005:
                    time.sleep(ahead)
            took = time.perf_counter() - start
            end_ns = time.monotonic_ns()
            results.append({"mode": "step", "rate": rate, "sent": count, "seconds": took,
                            "begin_ns": begin_ns, "end_ns": end_ns})
            time.sleep(1.0)
    for s in members + [sender]:
        s.close()
    Path(out).write_text(json.dumps(results))


# -- on the host --------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kernel", default="6.1")
    parser.add_argument("--n", type=int, default=FAST_N)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from tracekit.probe.guest import PROBE_TRACE, capture_in_guest
    from tracekit.trace import read_metadata, read_trace

    me = [sys.executable, str(Path(__file__).resolve()), "load"]
    run = capture_in_guest(
        args.kernel,
        [("probed", [*me, "fast", str(args.n), "probed.json"]),
         ("steps", [*me, "steps", "0", "steps.json"])],
        before=[("baseline", [*me, "fast", str(args.n), "baseline.json"])],
        outputs=["baseline.json", "probed.json", "steps.json"], timeout=3600)
    if run.returncode != 0:
        raise SystemExit(f"guest run failed ({run.returncode}):\n{run.stdout}\n{run.stderr}\n"
                         f"{run.files.get('probe.err', b'').decode()}")
    trace_path = REPO / "benchmarks" / f".probe-bench-{args.kernel}.parquet"
    trace_path.write_bytes(run.files[PROBE_TRACE])
    meta = read_metadata(trace_path)
    frame = read_trace(trace_path, columns=["event", "ts_ns", "lport"])
    selects = frame[(frame.event == "reuseport_select_sock") & (frame.lport == PORT)]
    base = json.loads(run.files["baseline.json"])[0]
    probed = json.loads(run.files["probed.json"])[0]
    per_base = base["seconds"] / base["sent"] * 1e6
    per_probed = probed["seconds"] / probed["sent"] * 1e6
    print(f"kernel {run.kernel} (QEMU TCG guest, 2 vCPUs); bpftrace {meta.get('tracekit.probe.tool')}")
    print(f"datagram without probe: {per_base:.1f} us; with probe: {per_probed:.1f} us; "
          f"overhead per selection: {per_probed - per_base:.1f} us ({per_probed / per_base:.2f}x)")
    print(f"lost events reported by bpftrace over the run: {meta.get('tracekit.probe.lost_events')}")
    print("| rate asked (datagrams/s) | achieved | sent | selections captured | lost |")
    print("|---:|---:|---:|---:|---:|")
    best = 0.0
    for step in json.loads(run.files["steps.json"]):
        ts = selects.ts_ns
        captured = int(((ts >= step["begin_ns"]) & (ts <= step["end_ns"])).sum())
        achieved = step["sent"] / step["seconds"]
        lost = step["sent"] - captured
        if lost <= 0:
            best = max(best, achieved)
        print(f"| {step['rate']:,} | {achieved:,.0f} | {step['sent']:,} | {captured:,} | {max(lost, 0):,} |")
    print(f"largest rate captured without loss: {best:,.0f} selections/s")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "load":
        load(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    else:
        main()
