"""Nonsense stories told in valid rows: every row passes the format's checks, the sequence of rows
is arbitrary (sockets used before they exist, listens on UDP sockets, observations of flows that
never arrived, programs the kernel would refuse reported as attached), over both layers.

`story(choose)` builds one from a chooser, so the same vocabulary drives Hypothesis (`stories()`,
which shrinks a failure to a few rows) and a seeded `random.Random` (`random_story`, for the
"150 random traces" experiment of issue 14: `python tests/replay/stories.py --traces 150`).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Sequence

from tracekit.kernel.cbpf import encode_sock_filter
from tracekit.trace import load_spec

Choose = Callable[[Sequence[Any]], Any]

_RET_K, _RET_A, _LD_B_ABS, _LD_W_ABS = 0x06, 0x16, 0x30, 0x20
SKF_AD_CPU = (-0x1000 + 36) & 0xFFFFFFFF
PROGRAMS: list[bytes | None] = [
    None,
    encode_sock_filter([(_RET_K, 0, 0, 0)]),                            # always socket 0
    encode_sock_filter([(_RET_K, 0, 0, 7)]),                            # past the group: hash
    encode_sock_filter([(_LD_B_ABS, 0, 0, 0), (_RET_A, 0, 0, 0)]),      # first payload byte
    encode_sock_filter([(_LD_W_ABS, 0, 0, SKF_AD_CPU), (_RET_A, 0, 0, 0)]),  # the CPU
    b"",                                                                # refused: empty
    encode_sock_filter([(0xFFFF, 0, 0, 0), (_RET_K, 0, 0, 0)]),         # refused: opcode
    encode_sock_filter([(_LD_B_ABS, 0, 0, 0)]),                         # refused: runs off its end
    encode_sock_filter([(0x15, 5, 0, 1), (_RET_K, 0, 0, 0)]),           # refused: jumps off its end
    encode_sock_filter([(0x04 | 0x30, 0, 0, 0), (_RET_A, 0, 0, 0)]),    # refused: divides by 0
    b"\x06\x00",                                                        # not whole instructions
    b"first-byte-steering",                                             # an eBPF program's name
    b"\xff\xfe",                                                        # a name that is not UTF-8
]
OPTIONS = ["SO_REUSEPORT", "SO_ATTACH_REUSEPORT_CBPF", "SO_ATTACH_REUSEPORT_EBPF",
           "SO_DETACH_REUSEPORT_BPF", "SO_INCOMING_CPU", "IPV6_V6ONLY", "SO_BINDTODEVICE",
           "SO_RCVBUF", "net.ipv4.tcp_migrate_req"]
POOLS: dict[str, list[Any]] = {
    "sk": [1, 1, 2, 2, 3, 3, 0, 4],
    "sk2": [1, 2, 3, 0, 4],
    "proto": ["tcp", "udp"],
    "family": [4, 6],
    "laddr": ["127.0.0.1", "0.0.0.0", "::", "::1", "::ffff:127.0.0.1", "10.0.0.1"],
    "raddr": ["127.0.0.1", "::1", "10.0.0.2"],
    "lport": [8080, 0, 8081],
    "rport": [40000, 40001, 0],
    "hash": [None, 0, 1, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF],
    "sk_hash": [None, 5, 0xC0000000],
    "cpu": [None, 0, 1, 8191],
    "payload": [None, b"", b"\x00", b"\x01\x02\x03\x04", b"\xff" * 9],
    "name": OPTIONS,
    "value": [None, 0, 1, 2, -1, 39, 40, 10, 7, 12, 2**62],
    "prog": PROGRAMS,
    "ret": [None, 0, 0, -1, -22, -98, -4095],
    "observed": [None, -1, 0, 1, 2, 3, 4],
    "ts_ns": [None, 1],
}
# the columns an event may carry besides the ones it requires (sometimes null)
_EVENTS = {event.name: event for event in load_spec().events}
EVENTS = sorted(_EVENTS)
LAYERS = {"both": EVENTS,
          "kernel": [e for e in EVENTS if _EVENTS[e].layer == "kernel"] + ["setsockopt", "sysctl"],
          "socket": [e for e in EVENTS if _EVENTS[e].layer == "socket"]}


def row(choose: Choose, event: str, host: str, seq: int) -> dict[str, Any]:
    """One valid row of `event`: its required columns from the pools, its optional ones maybe."""
    spec = _EVENTS[event]
    out: dict[str, Any] = {"host": host, "seq": seq, "event": event}
    for column in spec.requires:
        out[column] = choose([v for v in POOLS[column] if v is not None])
    for column in spec.uses:
        out[column] = choose(POOLS[column])
    if event == "reuseport_attach_prog":  # an eBPF program's name, or a classic program
        out["name"] = choose([None, "first-byte-steering"])
    return out


def setup(choose: Choose, host: str, seq: int) -> list[dict[str, Any]]:
    """A plausible start a story may have: sockets of one port, reuseport set, bound, listening."""
    proto, family = choose(POOLS["proto"]), choose(POOLS["family"])
    laddr = choose(["127.0.0.1", "0.0.0.0", "::"] if family == 6 else ["127.0.0.1", "0.0.0.0"])
    rows = []
    for sk in choose([[1, 2], [1, 2, 3], [0, 1, 2, 3, 4]]):
        rows.append({"event": "socket", "sk": sk, "proto": proto, "family": family})
        rows.append({"event": "setsockopt", "sk": sk, "name": "SO_REUSEPORT", "value": 1, "ret": 0})
        rows.append({"event": "bind", "sk": sk, "laddr": laddr, "lport": 8080, "ret": 0})
        if proto == "tcp":
            rows.append({"event": "listen", "sk": sk, "ret": 0})
    return [{"host": host, "seq": seq + i, **r} for i, r in enumerate(rows)]


def story(choose: Choose, length: int, hosts: Sequence[str] = ("h1",)) -> list[dict[str, Any]]:
    """`length` rows over `hosts` (after a plausible `setup` or not), events and their columns
    picked by `choose`."""
    seqs = dict.fromkeys(hosts, 0)
    rows = []
    events = LAYERS[choose(sorted(LAYERS))]
    for host in hosts:
        if events is not LAYERS["kernel"] and choose([True, True, False]):
            rows.extend(setup(choose, host, 1))
            seqs[host] = rows[-1]["seq"]
    for _ in range(length):
        host = choose(list(hosts))
        seqs[host] += choose([1, 1, 2])
        rows.append(row(choose, choose(events), host, seqs[host]))
    return rows


def stories(max_rows: int = 40):
    """A Hypothesis strategy of (rows, observations complete?) stories."""
    from hypothesis import strategies as st

    @st.composite
    def build(draw):
        choose = lambda pool: draw(st.sampled_from(pool))  # noqa: E731
        hosts = draw(st.sampled_from([("h1",), ("h1", "h2")]))
        rows = story(choose, draw(st.integers(1, max_rows)), hosts)
        return rows, draw(st.booleans())

    return build()


def random_story(rng: random.Random, max_rows: int = 60) -> list[dict[str, Any]]:
    return story(rng.choice, rng.randint(1, max_rows), rng.choice([("h1",), ("h1", "h2")]))


def _jsonable(r: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.hex() if isinstance(v, bytes) else v) for k, v in r.items() if v is not None}


def experiment(traces: int, seed: int, workdir: Path) -> Counter[int]:
    """Issue 14's experiment: random stories as JSON Lines, normalized then replayed by the CLI
    (in this process); the exit status of each trace's last command, counted."""
    from click.testing import CliRunner

    from tracekit.cli import main

    rng = random.Random(seed)
    runner = CliRunner()
    codes: Counter[int] = Counter()
    for i in range(traces):
        rows = random_story(rng)
        if rng.random() < 0.3:  # an address that is not one, which normalize must refuse
            victim = rng.choice(rows)
            victim[rng.choice(["laddr", "raddr"])] = rng.choice(["localhost", "10.0.0.300", "::g"])
        source = workdir / f"story-{i}.jsonl"
        source.write_text("".join(json.dumps(_jsonable(r)) + "\n" for r in rows))
        target = workdir / f"story-{i}.parquet"
        result = runner.invoke(main, ["normalize", str(source), "-o", str(target)])
        if result.exit_code == 0:
            result = runner.invoke(main, ["replay", str(target), "--no-explain"])
        codes[result.exit_code] += 1
        if result.exit_code not in (0, 1, 2):
            print(f"story-{i}: exit {result.exit_code}\n{result.output}", file=sys.stderr)
    return codes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", type=int, default=150)
    parser.add_argument("--seed", type=int, default=14)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        codes = experiment(args.traces, args.seed, Path(tmp))
    print(" ".join(f"exit {code}: {n}" for code, n in sorted(codes.items())))
    sys.exit(1 if set(codes) - {0, 1, 2} else 0)


if __name__ == "__main__":
    main()
