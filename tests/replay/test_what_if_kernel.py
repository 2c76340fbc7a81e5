"""What-if against the real kernel: `--what-if net.ipv4.tcp_migrate_req=1` on a rolling restart
recorded without migration predicts what recording it with migration on shows.

Two recordings in two namespaces hash differently (each namespace has its own secret) and the
clients' ephemeral ports differ, so only hash-independent numbers can agree between the built-in
stories. The exact check records both in ONE namespace, the second run repeating the first's
flows from the same source ports: same 4-tuples, same hashes, only the sysctl changed."""

from __future__ import annotations

import os

import pytest

from tracekit.replay import replay
from tracekit.trace import read_metadata, write_trace
from tracekit.trace.read import read_trace

pytestmark = pytest.mark.kernel

MIGRATE = ["net.ipv4.tcp_migrate_req=1"]


def _record(tmp_path, scenario, name):
    if os.geteuid() != 0:
        pytest.skip("recording needs root (network namespaces, BPF)")
    record = pytest.importorskip("tracekit.recorder.api").record
    out = tmp_path / f"{name}.parquet"
    try:
        return record(str(scenario), output=out, strict=False)
    except PermissionError as err:  # pragma: no cover - depends on the machine
        pytest.skip(f"the recorder cannot run here: {err}")


def _accepts(summary) -> int:
    return sum(sum(g["load"].values()) for g in summary["groups"])


def test_builtin_stories_agree_on_what_does_not_depend_on_the_hash(tmp_path):
    without = _record(tmp_path, "story-rolling-restart-no-migrate", "without")
    with_ = _record(tmp_path, "story-rolling-restart-migrate", "with")
    r = replay(without, what_if=MIGRATE)
    w = r.summary["what_if"]
    observed = sum(g["resets"] for g in r.summary["groups"])
    assert r.summary["mismatched"] == 0 and observed > 0
    assert w["resets"] == {"observed": observed, "avoided": observed, "added": 0}
    m = replay(with_)
    assert m.summary["mismatched"] == 0
    # every connection accepted, none reset: as the kernel did with migration on
    assert sum(g["resets"] for g in w["groups"]) == sum(g["resets"] for g in m.summary["groups"]) == 0
    assert sum(sum(g["load"].values()) for g in w["groups"]) == _accepts(m.summary) == 28


def _phase(migrate: int, suffix: str, first_port: int) -> str:
    """The rolling restart of story-rolling-restart-*, its clients from fixed source ports."""
    ports = iter(range(first_port, first_port + 28))

    def clients(label: str, count: int) -> str:
        src = ", ".join(str(next(ports)) for _ in range(count))
        return (f'[[step]]\nop = "clients"\nlabel = "{label}{suffix}"\naddr = "127.0.0.1"\n'
                f'port = 9000\ncount = {count}\ncpu = "all"\nsrc_ports = [{src}]\n')

    def open_(*names: str) -> str:
        socks = ", ".join(f'"{n}{suffix}"' for n in names)
        return f'[[step]]\nop = "open"\nsocks = [{socks}]\nproto = "tcp"\naddr = "127.0.0.1"\nport = 9000\n'

    def close(name: str, cpu: int) -> str:
        return f'[[step]]\nop = "close"\nsock = "{name}{suffix}"\ncpu = {cpu}\n'

    return "\n".join([
        f'[[step]]\nop = "sysctl"\nname = "net.ipv4.tcp_migrate_req"\nvalue = {migrate}\n',
        open_("old0", "old1", "old2"), clients("before", 8),
        open_("new0"), close("old0", 0), clients("during0", 4),
        open_("new1"), close("old1", 1), clients("during1", 4),
        open_("new2"), close("old2", 0), clients("during2", 4),
        clients("after", 8),
    ])


def test_what_if_migration_predicts_the_same_flows_recorded_with_migration(tmp_path):
    drain = "\n".join(f'[[step]]\nop = "accept"\nsock = "new{i}a"\n' for i in range(3)) + \
        "\n".join(f'[[step]]\nop = "close"\nsock = "new{i}a"\ncpu = 0\n' for i in range(3))
    scenario = tmp_path / "same-flows.toml"
    scenario.write_text('name = "rolling-restart-twice"\ndescription = "without, then with migration"\n\n'
                        + _phase(0, "a", 42000) + "\n" + drain + "\n" + _phase(1, "b", 42000))
    both = _record(tmp_path, scenario, "both")
    frame = read_trace(both)
    sysctls = frame.loc[frame["event"] == "sysctl", "seq"].tolist()
    assert len(sysctls) == 2
    meta = read_metadata(both)
    rows = [{k: v for k, v in row.items() if v is not None and v == v}
            for row in frame.astype(object).where(frame.notna(), None).to_dict("records")]
    without = write_trace(tmp_path / "a.parquet", [r for r in rows if r["seq"] < sysctls[1]], meta,
                          source="record")
    with_ = write_trace(tmp_path / "b.parquet", [r for r in rows if r["seq"] >= sysctls[1]], meta,
                        source="record")

    a, b = replay(without, what_if=MIGRATE), replay(with_)
    assert a.summary["mismatched"] == b.summary["mismatched"] == 0
    w = a.summary["what_if"]
    observed = sum(g["resets"] for g in a.summary["groups"])
    assert observed > 0 and w["resets"] == {"observed": observed, "avoided": observed, "added": 0}
    (wg,), (bg,) = w["groups"], b.summary["groups"]
    # the kernel with migration on did exactly what the what-if says, connection for connection:
    assert wg["resets"] == bg["resets"] == 0
    assert wg["migrations"] == bg["migrations"]
    assert bg["migrations"]["migrated"] == int(meta["tracekit.mib.TCPMigrateReqSuccess"])
    # sockets of the second run were created in the same order, six ids later
    assert {str(int(sk) + 6): n for sk, n in wg["load"].items()} == bg["load"]
