"""`tracekit probe` on real kernels: Debian's 6.1 and 6.12 booted under QEMU (`tracekit.vmlab`).

In each guest the probe runs while the recorder records scenarios and a random walk (each in a
namespace of its own); then, on this machine:

- the probe's trace replays with 0 mismatches and 0 unknown (every group was built while the
  probe watched; the recorder's eBPF observer is replayed by its policy, it passes);
- its selections match the recorder's observations one for one (`against_recorder.pair`);
- its successful migrations equal each namespace's TCPMigrateReqSuccess counter.

One boot per kernel (bpftrace compiles and loads for minutes under TCG); marked `vm` and `slow`.
"""

from __future__ import annotations

import pytest

from against_recorder import migrations, pair
from tracekit.recorder.policies import OBSERVER_KERNEL_NAME, observer_passes

pytestmark = [pytest.mark.vm, pytest.mark.slow]

KERNELS = ("6.1", "6.12")
# migrations (and the MIB counter), classic BPF with payloads, SO_INCOMING_CPU; the walk adds UDP
# (connected sockets too), IPv6, wildcards, shutdowns and more: one guest boot stays within CI time
SCENARIOS = ("story-rolling-restart-migrate", "story-cbpf-steering", "story-incoming-cpu")
WALK = ("--random", "5", "--steps", "40")
RECORDINGS = (*SCENARIOS, "walk")


@pytest.fixture(scope="module", params=KERNELS)
def guest(request, tmp_path_factory):
    from tracekit import vmlab

    reason = vmlab.unavailable_reason(request.param)
    if reason is not None:
        pytest.skip(f"no guest for {request.param}: {reason}")
    from tracekit.probe.guest import PROBE_TRACE, capture_in_guest

    py = vmlab.python_argv
    commands = [(s, py("-m", "tracekit", "record", s, "-o", f"{s}.parquet")) for s in SCENARIOS]
    commands.append(("walk", py("-m", "tracekit", "record", *WALK, "-o", "walk.parquet")))
    run = capture_in_guest(request.param, commands,
                           outputs=[f"{name}.parquet" for name in RECORDINGS], timeout=3000)
    # a recording exits 1 when the kernel breaks its scenario's [[expect]] (the trace is written)
    statuses = dict(line.split()[1::2] for line in run.stdout.splitlines() if line.startswith("step "))
    assert statuses.get("probe") == "0" and all(statuses.get(n) in ("0", "1") for n in RECORDINGS), \
        f"{run.stdout}\n{run.stderr}\n{run.files.get('probe.err', b'').decode()}"
    directory = tmp_path_factory.mktemp(f"probe-{request.param}")
    for name, data in run.files.items():
        (directory / name).write_bytes(data)
    return run.kernel, directory / PROBE_TRACE, {n: directory / f"{n}.parquet" for n in RECORDINGS}


def test_the_probe_trace_replays_with_no_mismatch_and_no_unknown(guest):
    import tracekit
    from tracekit.trace import read_metadata

    kernel, trace, _ = guest
    meta = read_metadata(trace)
    assert (meta["tracekit.source"], meta["tracekit.kernel"]) == ("probe", kernel)
    assert meta["tracekit.probe.lost_events"] == "0"
    r = tracekit.replay(trace, policies={OBSERVER_KERNEL_NAME: observer_passes})
    s = r.summary
    assert s["decisions"] > 100
    assert (s["mismatched"], s["unknown"]) == (0, 0), r.decisions.head(10).to_string()


def test_selections_match_the_recorders_observations_one_for_one(guest):
    import tracekit

    _, trace, recordings = guest
    probe = tracekit.read_trace(trace)
    hosts = set()
    for name, path in recordings.items():
        result = pair(probe, tracekit.read_trace(path))
        assert result.host not in hosts, f"{name} shares probe host {result.host}"
        hosts.add(result.host)
        assert result.pairs, name
        assert not result.unpaired, f"{name}: {result.unpaired[:5]}"
        assert not result.conflicts, f"{name}: {result.conflicts[:5]}"


def test_migrations_match_the_namespace_counter(guest):
    import tracekit
    from tracekit.trace import read_metadata

    _, trace, recordings = guest
    probe = tracekit.read_trace(trace)
    total = 0
    for name, path in recordings.items():
        recording = tracekit.read_trace(path)
        success = int(read_metadata(path)["tracekit.mib.TCPMigrateReqSuccess"])
        assert migrations(probe, pair(probe, recording).host) == success, name
        total += success
    assert total > 0
