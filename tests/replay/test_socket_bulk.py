"""The socket-layer bulk path (`tracekit.replay.stretch`, and a stopping listener's queue
migrated at once: `host.MIGRATE_IN_BULK`) against the faithful per-row path:
byte-identical results Parquet and JSON summary on recorded fixtures, on recordings whose
observations were moved to other sockets or drained in socket order, and on simulated traces."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tracekit.kernel import cbpf
from tracekit.kernel.packet import ETH_P_IP
from tracekit.kernel.socket_layer import host
from tracekit.simulator.api import injected_faults, simulate
from tracekit.replay import engine, stretch
from tracekit.replay.api import replay, write_results
from tracekit.report.json import summary_json
from tracekit.trace import read as trace_read
from tracebuilder import TraceBuilder

RECORDED = sorted((Path(__file__).parents[2] / "fixtures" / "recorded").glob("*.parquet"))
FLEET = sorted((Path(__file__).parents[2] / "fixtures" / "recorded" / "fleet").glob("*.parquet"))
WALK = Path(__file__).parents[2] / "fixtures" / "recorded" / "random-11-60.parquet"


def both_paths(path: Path, tmp_path: Path, monkeypatch, **options) -> tuple:
    """(bulk, faithful): each path's results Parquet bytes, summary JSON bytes and Replay.
    The bulk path also replays without results (it then counts matches without a decision
    record): its summary must be the same bytes."""
    out = []
    for bulk in (True, False):
        monkeypatch.setattr(engine, "BULK", bulk)
        monkeypatch.setattr(host, "MIGRATE_IN_BULK", bulk)
        result = replay(path, results=True, **options)
        results = write_results(result, tmp_path / f"results-{bulk}.parquet")
        out.append((results.read_bytes(), summary_json(result.summary), result))
    monkeypatch.setattr(engine, "BULK", True)
    monkeypatch.setattr(host, "MIGRATE_IN_BULK", True)
    assert summary_json(replay(path, **options).summary) == out[1][1]
    return out[0], out[1]


def assert_same(bulk: tuple, faithful: tuple) -> None:
    assert bulk[2].decisions.equals(faithful[2].decisions)
    assert bulk[1] == faithful[1]
    assert bulk[0] == faithful[0]


def closed_flows_seen(monkeypatch) -> list[int]:
    """Counts the observations the bulk path decided without the model, as a witness that the
    test reached it."""
    seen: list[int] = []
    original = stretch.SocketWalk._matches

    def counting(self, rows, *args):
        seen.append(len(rows))
        return original(self, rows, *args)

    monkeypatch.setattr(stretch.SocketWalk, "_matches", counting)
    return seen


@pytest.mark.parametrize("path", RECORDED + FLEET,
                         ids=[p.stem for p in RECORDED] + [f"fleet-{p.stem}" for p in FLEET])
def test_recorded_fixtures_give_the_same_bytes_on_both_paths(path, tmp_path, monkeypatch):
    bulk, faithful = both_paths(path, tmp_path, monkeypatch)
    assert_same(bulk, faithful)


def calls_of(monkeypatch, name: str, owner=stretch.SocketWalk) -> list:
    """Records what each call of `owner.name` returned, as a witness that a test reached it."""
    seen: list = []
    original = getattr(owner, name)

    def counting(self, *args):
        out = original(self, *args)
        seen.append(out)
        return out

    monkeypatch.setattr(owner, name, counting)
    return seen


@pytest.mark.parametrize("path", FLEET[:3], ids=[p.stem for p in FLEET[:3]])
def test_fleet_recordings_take_the_bulk_routes(path, tmp_path, monkeypatch):
    """The recorder's walks: arrivals to groups with a classic program are queued by the
    program's memoized answer, and observations of open flows are paired without a row dict,
    with the same bytes as the per-row path."""
    classic = calls_of(monkeypatch, "classic_pick", stretch.Route)
    observed = calls_of(monkeypatch, "_observe")
    delivered = calls_of(monkeypatch, "_deliver")
    bulk, faithful = both_paths(path, tmp_path, monkeypatch)
    assert_same(bulk, faithful)
    assert sum(pick is not None for pick in classic) >= 10
    assert len(observed) >= 100
    assert sum(delivered) >= 20  # datagrams to ports with connected sockets, memoized


CONNECTED_AND_CLASSIC = FLEET[3]  # random-3: a connected UDP socket and a classic program


@settings(max_examples=6, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), moved=st.floats(0.0, 0.3),
       payloads=st.booleans())
def test_fleet_recording_with_moved_observations_and_payloads_agrees(
        tmp_path_factory, monkeypatch, seed, moved, payloads):
    """Observations moved to other sockets (mismatches, replayed late) and datagram payloads
    rewritten (a classic program reading them answers otherwise) on a recording whose UDP port
    has a connected socket: the memoized lookups give the per-row path's bytes."""
    tmp_path = tmp_path_factory.mktemp("fleet")
    rng = np.random.default_rng(seed)

    def change(frame):
        _move_observations(frame, rng, moved)
        if payloads:
            datagrams = frame.index[frame.event == "datagram"]
            frame.loc[datagrams, "payload"] = [bytes(rng.integers(0, 256, 8, dtype=np.uint8))
                                               for _ in datagrams]
        return frame

    path = _rewrite(CONNECTED_AND_CLASSIC, tmp_path / "t.parquet", change)
    bulk, faithful = both_paths(path, tmp_path, monkeypatch)
    assert_same(bulk, faithful)


@settings(max_examples=8, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), cpus=st.integers(1, 4),
       recording=st.sampled_from(FLEET[:6]))
def test_fleet_recordings_with_other_cpus_and_hashes_agree(tmp_path_factory, monkeypatch, seed,
                                                          cpus, recording):
    """Every arrival's hash and CPU drawn anew: a port's memo answers a datagram by what the
    lookup reads of it (which socket a group with connections picks, which scores the CPU
    raises), so datagrams that differ only otherwise share an answer, rebuilt for each; the
    per-row path's bytes."""
    tmp_path = tmp_path_factory.mktemp("cpus")
    rng = np.random.default_rng(seed)

    def change(frame):
        arrivals = frame.index[frame.event.isin(["syn", "datagram"])]
        frame.loc[arrivals, "hash"] = rng.integers(0, 2**32, len(arrivals))
        frame.loc[arrivals, "cpu"] = rng.integers(0, cpus, len(arrivals))
        return frame

    delivered = calls_of(monkeypatch, "_deliver")
    path = _rewrite(recording, tmp_path / "t.parquet", change)
    bulk, faithful = both_paths(path, tmp_path, monkeypatch)
    assert_same(bulk, faithful)
    assert sum(delivered) or "datagram" not in pq.read_table(path).column("event").to_pylist()


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kernel=st.sampled_from(["5.15.0", "6.2.0", "6.6.0", "6.12.0", "6.18.0"]),
       members=st.lists(st.integers(-1, 2), min_size=2, max_size=4),
       connected=st.integers(0, 3), wildcard_cpu=st.one_of(st.none(), st.integers(-1, 2)),
       data=st.data())
def test_datagrams_to_a_port_with_a_connected_group_member_agree(
        tmp_path_factory, monkeypatch, kernel, members, connected, wildcard_cpu, data):
    """A UDP group one of whose members connects (a group with connections: `udp_rescore`
    scores the socket it picks; from 6.13 the member leaves it), members with SO_INCOMING_CPU,
    maybe a wildcard socket: datagrams of every hash, CPU and source, none received (the
    complete trace decides each), memoized per port (`tracekit.replay.ports`) with the per-row
    path's bytes."""
    b = TraceBuilder()
    for sk, cpu in enumerate(members):
        b.add("socket", sk=sk, proto="udp", family=4)
        b.add("setsockopt", sk=sk, name="SO_REUSEPORT", value=1, ret=0)
        if cpu >= 0:
            b.add("setsockopt", sk=sk, name="SO_INCOMING_CPU", value=cpu, ret=0)
        b.add("bind", sk=sk, laddr="127.0.0.1", lport=9000, ret=0)
    if wildcard_cpu is not None:
        sk = len(members)
        b.add("socket", sk=sk, proto="udp", family=4)
        if wildcard_cpu >= 0:
            b.add("setsockopt", sk=sk, name="SO_INCOMING_CPU", value=wildcard_cpu, ret=0)
        b.add("bind", sk=sk, laddr="0.0.0.0", lport=9000, ret=0)
    peer = 40000
    b.add("connect", sk=connected % len(members), raddr="127.0.0.1", rport=peer, ret=0)
    for _ in range(data.draw(st.integers(20, 60))):
        b.add("datagram", proto="udp", laddr="127.0.0.1", lport=9000, raddr="127.0.0.1",
              rport=data.draw(st.sampled_from([peer, peer + 1, peer + 2])),
              hash=data.draw(st.integers(0, 2**32 - 1)), cpu=data.draw(st.integers(0, 2)),
              payload=b"x")
    delivered = calls_of(monkeypatch, "_deliver")
    answers_checked(monkeypatch)
    path = b.write(tmp_path_factory.mktemp("port") / "t.parquet", kernel=kernel, complete=True)
    bulk, faithful = both_paths(path, tmp_path_factory.mktemp("out"), monkeypatch)
    assert_same(bulk, faithful)
    assert sum(delivered) >= 20


def test_memoized_answers_are_checked_against_the_faithful_lookup(tmp_path, monkeypatch):
    """`answers_checked` reaches memoized answers: datagrams from sources that are not the
    connected member's peer, on two CPUs, to a group with connections."""
    b = TraceBuilder()
    for sk in range(3):
        b.add("socket", sk=sk, proto="udp", family=4)
        b.add("setsockopt", sk=sk, name="SO_REUSEPORT", value=1, ret=0)
        b.add("bind", sk=sk, laddr="127.0.0.1", lport=9000, ret=0)
    b.add("connect", sk=1, raddr="127.0.0.1", rport=40000, ret=0)
    for i in range(30):
        b.add("datagram", proto="udp", laddr="127.0.0.1", lport=9000, raddr="127.0.0.1",
              rport=41000 + i, hash=(i % 3) * 0x55555555, cpu=i % 2, payload=b"x")
    memoized = answers_checked(monkeypatch)
    path = b.write(tmp_path / "t.parquet", complete=True)
    bulk, faithful = both_paths(path, tmp_path, monkeypatch)
    assert_same(bulk, faithful)
    assert len(memoized) >= 10


@pytest.mark.parametrize("kernel", ["6.6.0", "6.18.0"])
def test_datagrams_of_peers_and_of_others_skip_the_lookup(tmp_path, monkeypatch, kernel):
    """A group with SO_INCOMING_CPU members, one of them connected (in the group before 6.13,
    out of it after), and a wildcard socket connected (rehashed to the exact bucket): every
    datagram of a connected socket's peer goes to it by the 4-tuple lookup without the host's
    lookup, whatever the CPU, and the others' answers are memoized although each peer datagram
    moves its socket's `sk_incoming_cpu` (the group's route is the one for the CPUs now): at
    most a lookup per group pick and CPU bonus. Each checked against the faithful lookup."""
    b = TraceBuilder()
    for sk, cpu in ((0, 0), (1, None), (2, 1)):
        b.add("socket", sk=sk, proto="udp", family=4)
        b.add("setsockopt", sk=sk, name="SO_REUSEPORT", value=1, ret=0)
        if cpu is not None:
            b.add("setsockopt", sk=sk, name="SO_INCOMING_CPU", value=cpu, ret=0)
        b.add("bind", sk=sk, laddr="127.0.0.1", lport=9000, ret=0)
    b.add("socket", sk=3, proto="udp", family=4)
    b.add("bind", sk=3, laddr="0.0.0.0", lport=9000, ret=0)
    b.add("connect", sk=3, raddr="127.0.0.1", rport=40001, ret=0)
    b.add("connect", sk=1, raddr="127.0.0.1", rport=40000, ret=0)
    peers = []
    for i in range(40):
        rport = (40000, 40001, 41000 + i, 42000 + i)[i % 4]
        if i % 4 < 2:
            peers.append(len(b.rows) + 1)  # (its seq)
        b.add("datagram", proto="udp", laddr="127.0.0.1", lport=9000, raddr="127.0.0.1",
              rport=rport, hash=(i * 2654435761) % 2**32, cpu=(i // 2) % 2, payload=b"x")
    checked = answers_checked(monkeypatch)
    path = b.write(tmp_path / "t.parquet", kernel=kernel, complete=True)
    bulk, faithful = both_paths(path, tmp_path, monkeypatch)
    assert_same(bulk, faithful)
    assert set(peers) <= set(checked)
    lookups = 2 * 40 - len(checked)  # (two bulk replays)
    assert lookups <= 2 * 4, lookups


def answers_checked(monkeypatch) -> list[int]:
    """Every datagram a port memo delivers without the host's lookup (`PortMemo.deliver`: a
    memoized answer, or the 4-tuple lookup's socket) is also delivered by the faithful lookup
    on a copy of the host taken just before: the same arrival (socket, labelled pick) and the
    same CPUs on every socket after. Returns the `seq` of each datagram checked (a witness)."""
    from tracekit.kernel.socket_layer.pairing import Pairing
    from tracekit.replay import ports

    checked: list[int] = []
    deliver = ports.PortMemo.deliver

    def last_arrival(h, flow):
        entry = h.datagrams.flows[flow]
        arrival = max((a for q in entry.waiting.values() for a in q), key=lambda a: a.order)
        return arrival.predicted, arrival.item, arrival.payload

    def twin_of(h):
        """A copy of the host but for the datagrams waiting (the lookup does not read them)."""
        waiting, h.datagrams = h.datagrams, Pairing()
        try:
            return copy.deepcopy(h)
        finally:
            h.datagrams = waiting

    def cpus(h):
        return {sk_id: s.sk.sk_incoming_cpu for sk_id, s in h.socks.items()}

    lookups: list[int] = []
    lookup = host.Host.udp_lookup

    def counted(self, *args):
        lookups.append(1)
        return lookup(self, *args)

    def checking(self, h, flow, hash, cpu, seq, payload, route_of):
        twin = twin_of(h)
        twin.place_datagram(flow, *twin.udp_lookup(flow, hash, cpu, payload), cpu, payload)
        looked = len(lookups)
        deliver(self, h, flow, hash, cpu, seq, payload, route_of)
        assert last_arrival(h, flow) == last_arrival(twin, flow), f"seq {seq}"
        assert cpus(h) == cpus(twin), f"seq {seq}"
        if len(lookups) == looked:
            checked.append(seq)

    monkeypatch.setattr(host.Host, "udp_lookup", counted)
    monkeypatch.setattr(ports.PortMemo, "deliver", checking)
    return checked


def test_the_bulk_path_decides_closed_flows_of_a_recording(tmp_path, monkeypatch):
    seen = closed_flows_seen(monkeypatch)
    bulk, faithful = both_paths(WALK, tmp_path, monkeypatch)
    assert sum(seen) >= 10
    assert_same(bulk, faithful)


def _move_observations(frame, rng, moved: float) -> None:
    """Each `accept` and `recv` names another socket of the trace with probability `moved`."""
    observed = frame.index[frame.event.isin(["accept", "recv"])]
    sockets = sorted(frame.sk.dropna().unique())
    hit = observed[rng.random(len(observed)) < moved]
    frame.loc[hit, "sk"] = rng.choice(sockets, size=len(hit))


def _rewrite(path: Path, out: Path, change) -> Path:
    table = pq.read_table(path)
    frame = table.to_pandas()
    frame = change(frame)
    fixed = pa.Table.from_pandas(frame, schema=table.schema, preserve_index=False)
    pq.write_table(fixed.replace_schema_metadata(table.schema.metadata), out)
    return out


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), moved=st.floats(0.0, 0.3),
       socket_order=st.booleans())
def test_recordings_with_moved_or_reordered_observations_agree(tmp_path_factory, monkeypatch,
                                                               seed, moved, socket_order):
    """Observations moved to another socket of the trace (mismatches, some replayed late) and
    `recv`s rewritten in socket order within each run of them (as applications drain)."""
    tmp_path = tmp_path_factory.mktemp("moved")
    rng = np.random.default_rng(seed)

    def change(frame):
        _move_observations(frame, rng, moved)
        if socket_order:
            recv = (frame.event == "recv").to_numpy()
            run = np.cumsum(~recv)
            for _, rows in frame[recv].groupby(run[recv]):
                order = rows.sort_values(["sk"], kind="stable")
                frame.loc[rows.index, frame.columns.drop("seq")] = \
                    order[frame.columns.drop("seq")].to_numpy()
        return frame

    path = _rewrite(WALK, tmp_path / "t.parquet", change)
    bulk, faithful = both_paths(path, tmp_path, monkeypatch)
    assert_same(bulk, faithful)


@pytest.mark.parametrize("workload", ["steady", "mutation-heavy"])
def test_simulated_socket_traces_agree_and_replay_clean(tmp_path, monkeypatch, workload):
    seen = closed_flows_seen(monkeypatch)
    path = simulate(workload, layer="socket", events=8_000, seed=5, hosts=2,
                    output=tmp_path / "t.parquet")
    bulk, faithful = both_paths(path, tmp_path, monkeypatch)
    assert_same(bulk, faithful)
    summary = bulk[2].summary
    assert (summary["mismatched"], summary["unknown"]) == (0, 0)
    assert summary["decisions"] > 2_500 and sum(seen) > 1_000


@settings(max_examples=8, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(workload=st.sampled_from(["steady", "mutation-heavy"]), seed=st.integers(0, 10_000),
       rate=st.sampled_from([0.0, 0.01, 0.2]), explain_all=st.booleans())
def test_simulated_socket_traces_with_faults_agree(tmp_path_factory, monkeypatch, workload,
                                                   seed, rate, explain_all):
    tmp_path = tmp_path_factory.mktemp("sim")
    path = simulate(workload, layer="socket", events=3_000, seed=seed, hosts=2,
                    inject_faults=rate, output=tmp_path / "t.parquet")
    bulk, faithful = both_paths(path, tmp_path, monkeypatch, explain_all=explain_all)
    assert_same(bulk, faithful)
    faults = injected_faults(path).to_pandas()
    mismatches = bulk[2].decisions.query("verdict == 'mismatch'")
    assert sorted(zip(mismatches.host, mismatches.seq)) == sorted(zip(faults.host, faults.seq))


def test_socket_layer_simulation_is_the_same_bytes_in_bulk_and_one_by_one(tmp_path):
    for workload in ("steady", "mutation-heavy"):
        a = simulate(workload, layer="socket", events=5_000, seed=9, hosts=2,
                     output=tmp_path / "a.parquet")
        b = simulate(workload, layer="socket", events=5_000, seed=9, hosts=2, bulk=False,
                     output=tmp_path / "b.parquet")
        c = simulate(workload, layer="socket", events=5_000, seed=9, hosts=2,
                     output=tmp_path / "c.parquet")
        assert a.read_bytes() == b.read_bytes() == c.read_bytes()


def small_batches(monkeypatch, rows: int) -> list[int]:
    """Replays read `rows` rows a batch; returns the sizes of the rows a bulk walk held back
    for the next batch, as a witness that the test reached that route."""
    import tracekit.trace

    monkeypatch.setattr(tracekit.trace, "iter_batches",
                        lambda *args, **kwargs: trace_read.iter_batches(*args, **{**kwargs, "batch_size": rows}))
    held: list[int] = []
    original = engine._joined

    def joined(first, second):
        held.append(first.num_rows)
        return original(first, second)

    monkeypatch.setattr(engine, "_joined", joined)
    return held


@settings(max_examples=10, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(workload=st.sampled_from(["steady", "mutation-heavy"]), seed=st.integers(0, 10_000),
       rate=st.sampled_from([0.0, 0.02]), rows=st.integers(150, 1_400))
def test_flows_held_back_across_batches_give_the_same_bytes(tmp_path_factory, monkeypatch,
                                                           workload, seed, rate, rows):
    """Batches cut anywhere: the flows still open at a batch's end replayed with the next
    batch (`SocketWalk._cut`), against the per-row path on the same batches."""
    tmp_path = tmp_path_factory.mktemp("held")
    path = simulate(workload, layer="socket", events=6_000, seed=seed, hosts=2,
                    inject_faults=rate, output=tmp_path / "t.parquet")
    held = small_batches(monkeypatch, rows)
    bulk, faithful = both_paths(path, tmp_path, monkeypatch)
    assert_same(bulk, faithful)
    if workload == "steady":
        assert held and max(held) <= stretch.HOLD


@settings(max_examples=6, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(workload=st.sampled_from(["steady", "mutation-heavy"]), seed=st.integers(0, 10_000),
       walk=st.integers(150, 700), walks=st.integers(2, 5))
def test_flows_held_back_within_a_batch_give_the_same_bytes(tmp_path_factory, monkeypatch,
                                                            workload, seed, walk, walks):
    """A batch walked a slice at a time (`Engine.WALK_ROWS`): the flows a walk holds back go on
    with the next slice of the same batch (no copy; only those held over from the batch before
    are copied), against the per-row path on the same batches."""
    tmp_path = tmp_path_factory.mktemp("held-within")
    path = simulate(workload, layer="socket", events=6_000, seed=seed, hosts=2, output=tmp_path / "t.parquet")
    monkeypatch.setattr(engine, "WALK_ROWS", walk)
    joined = small_batches(monkeypatch, walk * walks + 17)
    holds: list[int] = []  # rows each walk of a slice held back
    original = engine.Engine._feed

    def feed(self, batch, open_end):
        done = original(self, batch, open_end)
        holds.append(batch.num_rows - done)
        return done

    monkeypatch.setattr(engine.Engine, "_feed", feed)
    bulk, faithful = both_paths(path, tmp_path, monkeypatch)
    assert_same(bulk, faithful)
    if workload == "steady":  # some held rows went on without a copy
        assert len(joined) < len([rows for rows in holds if rows])


@pytest.mark.parametrize("rows", [97, 1_000])
def test_a_recording_in_small_batches_gives_the_same_bytes(tmp_path, monkeypatch, rows):
    small_batches(monkeypatch, rows)
    bulk, faithful = both_paths(WALK, tmp_path, monkeypatch)
    assert_same(bulk, faithful)


# -- routes and port memos kept while no row changes a socket (`SocketWalk._one`) ----------------

def memos_checked(monkeypatch) -> list[int]:
    """Every datagram `SocketWalk._deliver` takes through a port memo it kept checks that the
    memo is the one of the port's state now (`ports.port_state`), as a fresh one would be (or
    none, as a fresh one would be). Returns the rows of those datagrams (a witness)."""
    from tracekit.replay import ports

    kept: list[int] = []
    deliver = stretch.SocketWalk._deliver

    def checked(self, r):
        v, hs = self.values, self.hs
        dest = (v.laddr[r], v.lport[r])
        if v.cpu_known[r] and dest in self.ports:
            memo = self.ports[dest]
            fresh = ports.memo_of({}, hs.host, self.sc.addresses[dest[0]], dest[1],
                                  self._known_route)
            assert (memo is None) == (fresh is None), f"row {r + self.a}: {memo} {fresh}"
            if memo is not None:
                assert memo.state == fresh.state, f"row {r + self.a}: a stale memo of {dest}"
            kept.append(r)
        return deliver(self, r)

    monkeypatch.setattr(stretch.SocketWalk, "_deliver", checked)
    return kept


@pytest.mark.parametrize("path", RECORDED + FLEET,
                         ids=[p.stem for p in RECORDED] + [f"fleet-{p.stem}" for p in FLEET])
def test_port_memos_a_walk_keeps_are_those_of_the_port_now(path, tmp_path, monkeypatch):
    kept = memos_checked(monkeypatch)
    replay(path)
    if path in FLEET[:4]:
        assert kept


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kernel=st.sampled_from(["5.15.0", "6.6.0", "6.12.0", "6.18.0"]), data=st.data())
def test_port_memos_follow_changes_to_their_own_and_other_ports(tmp_path_factory, monkeypatch,
                                                               kernel, data):
    """UDP sockets on two ports (in groups or not, wildcard or not, with SO_INCOMING_CPU, some
    connecting, closing, rebinding, ids reused, even before a close, classic programs attached
    and detached) and TCP listeners on the same port numbers, between datagrams to both: each
    memo a walk keeps (`SocketWalk._one` forgets only those a row may change: `SOCKET_ROWS`)
    is the memo of its port as it is now, and the bytes are the per-row path's. (A group
    holding two sockets of one id is replayed row by row: `Route.ambiguous`.)"""
    b = TraceBuilder()
    ports_, peer = (9000, 9001), 40000
    live: set[int] = set()
    programs = [cbpf.encode_sock_filter(SHARED_PROGRAMS[name]) for name in ("cpu", "second byte")]
    for _ in range(data.draw(st.integers(10, 40))):
        step = data.draw(st.sampled_from(["open", "open", "cpu", "connect", "close", "program",
                                          "tcp", "shutdown", "datagrams", "datagrams",
                                          "datagrams"]))
        if step == "open":
            sk = data.draw(st.integers(0, 7))
            b.add("socket", sk=sk, proto="udp", family=4)
            if data.draw(st.booleans()):
                b.add("setsockopt", sk=sk, name="SO_REUSEPORT", value=1, ret=0)
            b.add("bind", sk=sk, laddr=data.draw(st.sampled_from(["127.0.0.1", "0.0.0.0"])),
                  lport=data.draw(st.sampled_from(ports_)), ret=0)
            live.add(sk)
        elif step == "tcp":  # a listener of an id some UDP socket may have had or have
            sk = data.draw(st.integers(0, 9))
            b.add("socket", sk=sk, proto="tcp", family=4)
            b.add("setsockopt", sk=sk, name="SO_REUSEPORT", value=1, ret=0)
            b.add("bind", sk=sk, laddr="127.0.0.1", lport=data.draw(st.sampled_from(ports_)),
                  ret=0)
            b.add("listen", sk=sk, ret=0)
            live.discard(sk)
        elif step == "program" and live:
            sk = data.draw(st.sampled_from(sorted(live)))
            if data.draw(st.booleans()):
                b.add("setsockopt", sk=sk, name="SO_ATTACH_REUSEPORT_CBPF",
                      prog=data.draw(st.sampled_from(programs)), ret=0)
            else:
                b.add("setsockopt", sk=sk, name="SO_DETACH_REUSEPORT_BPF", ret=0)
        elif step == "shutdown" and live:
            b.add("shutdown", sk=data.draw(st.sampled_from(sorted(live))), value=2, cpu=1)
        elif step == "cpu" and live:
            b.add("setsockopt", sk=data.draw(st.sampled_from(sorted(live))),
                  name="SO_INCOMING_CPU", value=data.draw(st.integers(0, 2)), ret=0)
        elif step == "connect" and live:
            b.add("connect", sk=data.draw(st.sampled_from(sorted(live))), raddr="127.0.0.1",
                  rport=data.draw(st.sampled_from([peer, peer + 1])), ret=0)
        elif step == "close" and live:
            sk = data.draw(st.sampled_from(sorted(live)))
            b.add("close", sk=sk, cpu=0)
            live.discard(sk)
        else:
            for _ in range(data.draw(st.integers(1, 6))):
                b.add("datagram", proto="udp", laddr="127.0.0.1",
                      lport=data.draw(st.sampled_from(ports_)), raddr="127.0.0.1",
                      rport=data.draw(st.sampled_from([peer, peer + 1, peer + 2])),
                      hash=data.draw(st.integers(0, 2**32 - 1)),
                      cpu=data.draw(st.integers(0, 2)),
                      payload=data.draw(st.sampled_from([b"x", b"\x00\x01", b"\x00\x02"])))
    memos_checked(monkeypatch)
    answers_checked(monkeypatch)
    path = b.write(tmp_path_factory.mktemp("ports") / "t.parquet", kernel=kernel, complete=True)
    bulk, faithful = both_paths(path, tmp_path_factory.mktemp("out"), monkeypatch)
    assert_same(bulk, faithful)


def routes_checked(monkeypatch) -> list[int]:
    """Every time the walk reads the routes it keeps (`SocketWalk.route_at`: before it queues
    an arrival, `_queue`, and before it tags an epoch's closed arrivals, `_tag`), each route it
    holds is checked to be the one the host's lookup gives now, built afresh. Returns the rows
    of those checks that found a kept route (a witness)."""
    kept: list[int] = []

    def check(self, r):
        for (k, dest), index in self.route_at.items():
            laddr, lport = self.sc.addresses[dest // stretch.PORTS], dest % stretch.PORTS
            head = self.hs.host.hash_route(stretch.ARRIVAL_EVENT[k], laddr, lport, classic=True)
            fresh = None if head is None else stretch.Route(self.hs, head)
            if fresh is not None and fresh.ambiguous:
                fresh = None
            where = f"row {r + self.a}, {laddr}:{lport}"
            assert (index is None) == (fresh is None), f"{where}: {index} {fresh}"
            if fresh is not None:
                route = self.routes[index]
                assert (route.state, route.label, route.prog, route.history, route.socks) == \
                    (fresh.state, fresh.label, fresh.prog, fresh.history, fresh.socks), \
                    f"{where}: a stale route"
        if self.route_at:
            kept.append(r)

    queue, tag = stretch.SocketWalk._queue, stretch.SocketWalk._tag

    def queue_checked(self, r, *args):
        check(self, r)
        return queue(self, r, *args)

    def tag_checked(self, lo, hi, arrivals, *args):
        check(self, int(arrivals[lo]))
        return tag(self, lo, hi, arrivals, *args)

    monkeypatch.setattr(stretch.SocketWalk, "_queue", queue_checked)
    monkeypatch.setattr(stretch.SocketWalk, "_tag", tag_checked)
    return kept


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kernel=st.sampled_from(["5.15.0", "6.6.0", "6.18.0"]), migrate=st.booleans(),
       data=st.data())
def test_routes_follow_changes_to_their_own_and_other_ports(tmp_path_factory, monkeypatch,
                                                           kernel, migrate, data):
    """TCP listeners on two ports (groups or not, wildcard or not, ids reused, even before a
    close) opened, closed and shut down between connections to both, accepted or reset on any
    socket: each route a walk keeps is the route the lookup gives now, and the bytes are the
    per-row path's."""
    b = TraceBuilder()
    if migrate:
        b.add("sysctl", name="net.ipv4.tcp_migrate_req", value=1)
    ports_, rport, waiting, live = (8000, 8001), 30000, [], set()
    for _ in range(data.draw(st.integers(10, 40))):
        step = data.draw(st.sampled_from(["open", "open", "close", "shutdown", "syns", "syns",
                                          "syns", "observe", "observe"]))
        if step != "open" and not live:
            continue
        sk = data.draw(st.integers(0, 5) if step == "open" else st.sampled_from(sorted(live)))
        if step == "open":
            live.add(sk)
            b.add("socket", sk=sk, proto="tcp", family=4)
            if data.draw(st.booleans()):
                b.add("setsockopt", sk=sk, name="SO_REUSEPORT", value=1, ret=0)
            b.add("bind", sk=sk, laddr=data.draw(st.sampled_from(["127.0.0.1", "0.0.0.0"])),
                  lport=data.draw(st.sampled_from(ports_)), ret=0)
            b.add("listen", sk=sk, ret=0)
        elif step == "close":
            b.add("close", sk=sk, cpu=data.draw(st.integers(0, 1)))
            live.discard(sk)
        elif step == "shutdown":
            b.add("shutdown", sk=sk, value=0, cpu=0)
        elif step == "syns":
            for _ in range(data.draw(st.integers(1, 6))):
                rport += 1
                lport = data.draw(st.sampled_from(ports_))
                b.conn(rport, data.draw(st.integers(0, 2**32 - 1)), data.draw(st.integers(0, 1)),
                       lport=lport)
                b.rows[-1]["sk_hash"] = data.draw(st.integers(0, 2**32 - 1))
                waiting.append((rport, lport))
        elif waiting:
            for _ in range(data.draw(st.integers(1, len(waiting)))):
                at, lport = waiting.pop(data.draw(st.integers(0, len(waiting) - 1)))
                if data.draw(st.integers(0, 4)):
                    b.accept(data.draw(st.sampled_from(sorted(live))), at, lport=lport)
                else:
                    b.add("reset", proto="tcp", laddr="127.0.0.1", lport=lport,
                          raddr="127.0.0.1", rport=at)
                if not waiting:
                    break
    routes_checked(monkeypatch)
    path = b.write(tmp_path_factory.mktemp("routes") / "t.parquet", kernel=kernel)
    bulk, faithful = both_paths(path, tmp_path_factory.mktemp("out"), monkeypatch)
    assert_same(bulk, faithful)


def test_routes_were_kept_and_checked(tmp_path, monkeypatch):
    """The check of kept routes reads some: a recording's walks keep routes across rows."""
    kept = routes_checked(monkeypatch)
    replay(FLEET[0])
    assert kept


def test_a_socket_opened_under_a_listening_sockets_id_takes_its_connections(tmp_path,
                                                                            monkeypatch):
    """A trace that opens a socket under the id of a listener still in its group: the lookup
    finds the listener, and the connection queues on the host's socket of that id (the new
    one), whose stop then resets it. The walk's routes are rebuilt for it (`Route.current`),
    not taken from before."""
    from tracebuilder import slot_hash

    b = TraceBuilder().tcp_listeners([0, 1])
    b.conn(1000, slot_hash(0, 2)).accept(0, 1000)
    b.add("socket", sk=0, proto="tcp", family=4)
    b.add("bind", sk=0, laddr="127.0.0.1", lport=8080, ret=0)
    b.conn(1001, slot_hash(0, 2))
    b.add("listen", sk=0, ret=0)
    b.add("close", sk=0, cpu=0)
    b.accept(0, 1001)
    path = b.write(tmp_path / "t.parquet")
    bulk, faithful = both_paths(path, tmp_path, monkeypatch)
    assert_same(bulk, faithful)
    assert bulk[2].decisions.query("rport == 1001").expected.tolist() == [-1]


@settings(max_examples=10, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kernel=st.sampled_from(["5.15.0", "6.12.0", "6.18.0"]), data=st.data())
def test_a_classic_program_reading_the_protocol_answers_each_family(tmp_path_factory, monkeypatch,
                                                                   kernel, data):
    """A dual-stack UDP group (`::`, not v6only) whose classic program loads `SKF_AD_PROTOCOL`
    (the EtherType: IPv4 or IPv6) and picks by it, its group changed between datagrams to
    127.0.0.1 (also spelled ::ffff:127.0.0.1) and ::1 (routes rebuilt, the program's memoized
    answers kept by the host): each family gets the program's own answer, the per-row path's
    bytes; an IPv4-mapped address is IPv4's."""
    from tracekit.kernel.cbpf import SKF_AD_OFF, SKF_AD_PROTOCOL, encode_sock_filter

    load = SKF_AD_OFF + SKF_AD_PROTOCOL + 2**32
    prog = encode_sock_filter([(0x20, 0, 0, load), (0x15, 0, 1, 0x0800), (0x06, 0, 0, 0),
                               (0x06, 0, 0, 1)])
    b = TraceBuilder()
    live: list[int] = []
    for sk in range(data.draw(st.integers(2, 4))):
        b.add("socket", sk=sk, proto="udp", family=6)
        b.add("setsockopt", sk=sk, name="SO_REUSEPORT", value=1, ret=0)
        b.add("bind", sk=sk, laddr="::", lport=9000, ret=0)
        live.append(sk)
    b.add("setsockopt", sk=0, name="SO_ATTACH_REUSEPORT_CBPF", prog=prog, ret=0)
    rport = 40000
    for _ in range(data.draw(st.integers(2, 5))):
        for _ in range(data.draw(st.integers(1, 8))):
            rport += 1
            # IPv4 spelled plain or IPv4-mapped (it travels as IPv4 either way)
            address = data.draw(st.sampled_from(["127.0.0.1", "::ffff:127.0.0.1", "::1"]))
            b.add("datagram", proto="udp", laddr=address, lport=9000, raddr=address, rport=rport,
                  hash=data.draw(st.integers(0, 2**32 - 1)), cpu=data.draw(st.integers(0, 1)),
                  payload=b"x")
        sk = len(live) + 10
        b.add("socket", sk=sk, proto="udp", family=6)  # the group changes: its route too
        b.add("setsockopt", sk=sk, name="SO_REUSEPORT", value=1, ret=0)
        b.add("bind", sk=sk, laddr="::", lport=9000, ret=0)
        live.append(sk)
    classic = calls_of(monkeypatch, "classic_pick", stretch.Route)
    path = b.write(tmp_path_factory.mktemp("proto") / "t.parquet", kernel=kernel, complete=True)
    bulk, faithful = both_paths(path, tmp_path_factory.mktemp("out"), monkeypatch)
    assert_same(bulk, faithful)
    assert sum(pick is not None for pick in classic) >= 2
    decisions = faithful[2].decisions  # (socks[0] is sk 0, socks[1] sk 1)
    v6 = decisions.laddr == "::1"
    assert set(decisions.expected[~v6]) <= {0} and set(decisions.expected[v6]) <= {1}


_AD = cbpf.SKF_AD_OFF & 0xFFFFFFFF
SHARED_PROGRAMS = {  # what each reads of a packet, besides nothing
    "ip version": [(cbpf.BPF_LD | cbpf.BPF_W | cbpf.BPF_ABS, 0, 0, _AD + cbpf.SKF_AD_PROTOCOL),
                   (cbpf.BPF_JMP | cbpf.BPF_JEQ | cbpf.BPF_K, 0, 1, ETH_P_IP),
                   (cbpf.BPF_RET | cbpf.BPF_K, 0, 0, 0), (cbpf.BPF_RET | cbpf.BPF_K, 0, 0, 1)],
    "cpu": [(cbpf.BPF_LD | cbpf.BPF_W | cbpf.BPF_ABS, 0, 0, _AD + cbpf.SKF_AD_CPU),
            (cbpf.BPF_RET | cbpf.BPF_A, 0, 0, 0)],
    "second byte": [(cbpf.BPF_LD | cbpf.BPF_B | cbpf.BPF_ABS, 0, 0, 1),
                    (cbpf.BPF_ALU | cbpf.BPF_AND | cbpf.BPF_K, 0, 0, 3),
                    (cbpf.BPF_RET | cbpf.BPF_A, 0, 0, 0)],
    "length": [(cbpf.BPF_LD | cbpf.BPF_W | cbpf.BPF_LEN, 0, 0, 0),
               (cbpf.BPF_ALU | cbpf.BPF_AND | cbpf.BPF_K, 0, 0, 3),
               (cbpf.BPF_RET | cbpf.BPF_A, 0, 0, 0)],
    "constant": [(cbpf.BPF_RET | cbpf.BPF_K, 0, 0, 1)],
}


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(program=st.sampled_from(sorted(SHARED_PROGRAMS)),
       groups=st.lists(st.tuples(st.sampled_from(["udp", "tcp"]),
                                 st.sampled_from(["127.0.0.1", "::1"]), st.integers(2, 4)),
                       min_size=2, max_size=3),
       data=st.data())
def test_one_classic_program_on_several_groups_of_a_host_agrees(tmp_path_factory, monkeypatch,
                                                               program, groups, data):
    """The same classic program attached to TCP and UDP groups on IPv4 and IPv6 of one host:
    the walk keeps the program's answers per host, on what the program reads (the IP version,
    the CPU, payload bytes, the length, or nothing), so packets of other groups that differ
    only otherwise share an answer; the per-row path's bytes. (Route changes between arrivals
    and their observations keep the flows open: their arrivals are queued by the answer.)"""
    b, sk, targets = TraceBuilder(), 0, []
    prog = cbpf.encode_sock_filter(SHARED_PROGRAMS[program])
    for g, (proto, laddr, size) in enumerate(groups):
        family = 6 if ":" in laddr else 4
        members = list(range(sk, sk + size))
        for s in members:
            b.add("socket", sk=s, proto=proto, family=family)
            b.add("setsockopt", sk=s, name="SO_REUSEPORT", value=1, ret=0)
            b.add("bind", sk=s, laddr=laddr, lport=9000 + g, ret=0)
            if proto == "tcp":
                b.add("listen", sk=s, ret=0)
        b.add("setsockopt", sk=members[0], name="SO_ATTACH_REUSEPORT_CBPF", prog=prog, ret=0)
        targets.append((proto, laddr, 9000 + g, members))
        sk += size
    spare = sk  # a socket whose options start new route epochs: flows span them, open
    b.add("socket", sk=spare, proto="tcp", family=4)
    rport, waiting = 30000, []
    for _ in range(data.draw(st.integers(10, 40))):
        if data.draw(st.booleans()):
            b.add("setsockopt", sk=spare, name="SO_REUSEPORT", value=1, ret=0)
        proto, laddr, lport, members = data.draw(st.sampled_from(targets))
        rport += 1
        event = "datagram" if proto == "udp" else "syn"
        b.add(event, proto=proto, laddr=laddr, lport=lport, raddr=laddr, rport=rport,
              hash=data.draw(st.integers(0, 2**32 - 1)), cpu=data.draw(st.integers(0, 3)),
              payload=data.draw(st.sampled_from([b"", b"\x01", b"\x00\x02", b"\x00\x03\x01"])))
        waiting.append((proto, laddr, lport, rport, members))
        if data.draw(st.booleans()):
            proto, laddr, lport, at, members = waiting.pop(0)
            b.add("accept" if proto == "tcp" else "recv", sk=data.draw(st.sampled_from(members)),
                  proto=proto, laddr=laddr, lport=lport, raddr=laddr, rport=at)
    classic = calls_of(monkeypatch, "classic_pick", stretch.Route)
    path = b.write(tmp_path_factory.mktemp("classic") / "t.parquet")
    bulk, faithful = both_paths(path, tmp_path_factory.mktemp("out"), monkeypatch)
    assert_same(bulk, faithful)
    assert sum(pick is not None for pick in classic) >= 5


def test_closed_flows_to_a_group_with_a_classic_program_are_queued_by_its_answers(
        tmp_path, monkeypatch):
    """Flows whose every row lies between two route changes, to TCP and UDP groups with a
    classic program: the bulk tables cannot run the program, so their rows are taken in order,
    their arrivals queued by the program's answer (`_queue`), none through the per-row lookup;
    the per-row path's bytes."""
    b = TraceBuilder()
    prog = cbpf.encode_sock_filter(SHARED_PROGRAMS["second byte"])
    for proto, lport, first in (("udp", 9000, 0), ("tcp", 9001, 3)):
        for sk in range(first, first + 3):
            b.add("socket", sk=sk, proto=proto, family=4)
            b.add("setsockopt", sk=sk, name="SO_REUSEPORT", value=1, ret=0)
            b.add("bind", sk=sk, laddr="127.0.0.1", lport=lport, ret=0)
            if proto == "tcp":
                b.add("listen", sk=sk, ret=0)
        b.add("setsockopt", sk=first, name="SO_ATTACH_REUSEPORT_CBPF", prog=prog, ret=0)
    for i in range(24):
        proto, lport, first = ("udp", 9000, 0) if i % 2 else ("tcp", 9001, 3)
        payload = bytes([0, i % 5])  # the program answers i % 5 & 3 (3: past the last slot)
        b.add("datagram" if proto == "udp" else "syn", proto=proto, laddr="127.0.0.1",
              lport=lport, raddr="127.0.0.1", rport=20000 + i, hash=(i * 2654435761) % 2**32,
              cpu=0, payload=payload)
        b.add("recv" if proto == "udp" else "accept", sk=first + i % 3, proto=proto,
              laddr="127.0.0.1", lport=lport, raddr="127.0.0.1", rport=20000 + i)
    queued = calls_of(monkeypatch, "_queue")
    one = calls_of(monkeypatch, "_one")
    path = b.write(tmp_path / "t.parquet")
    bulk, faithful = both_paths(path, tmp_path, monkeypatch)
    assert_same(bulk, faithful)
    assert sum(queued) == 24 * 2  # every arrival, on each of the two bulk replays
    assert len(one) == 2 * (len(b.rows) - 48)  # and one by one only the sockets' rows
