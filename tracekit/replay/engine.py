"""Drive a per-host model over record batches in `seq` order and turn observations into decisions.

Pure: it consumes the batches handed to it. Hosts are independent. Socket-layer events go through
`tracekit.kernel.socket_layer.Host`; kernel-layer events call `sock_reuseport.c`'s twins directly.
Runs of consecutive kernel-layer `reuseport_select_sock` rows on one socket (the group cannot
change inside a run) go to the bulk path `tracekit.replay.fast.select_run`; rows it cannot decide
(-2) and rows whose bulk answer differs from the observation are replayed one by one, which also
gives mismatches their explanations.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tracekit.kernel.net import Net
from tracekit.kernel.profiles import Profile
from tracekit.kernel.socket_layer import Host, Pick
from tracekit.kernel.socket_layer import kernel_calls as kc
from tracekit.kernel.socket_layer.host import Expectation, Migration
from tracekit.replay.decision import Decision, verdict_of
from tracekit.replay.explain import explain, explain_ret
from tracekit.replay.history import GroupHistory
from tracekit.replay.sink import DecisionSink

try:
    from tracekit.replay.fast import select_run
except ImportError:  # pragma: no cover - the seam works without the bulk module
    def select_run(reuse, hashes, cpus=None):  # type: ignore[no-redef]
        return np.full(len(hashes), -2, dtype=np.int64)

SELECT = "reuseport_select_sock"
FAITHFUL = -2
COLUMNS = ("host", "seq", "event", "sk", "sk2", "proto", "family", "laddr", "raddr", "lport",
           "rport", "hash", "cpu", "payload", "name", "value", "prog", "ret", "observed")

# events that change a group's membership: the history records what they did
MEMBERSHIP = {"bind", "listen", "connect", "shutdown", "close", "reuseport_alloc",
              "reuseport_add_sock", "reuseport_detach_sock", "reuseport_stop_listen_sock"}
RET_CALLS = {"reuseport_alloc", "reuseport_add_sock", "reuseport_attach_prog",
             "reuseport_detach_prog"}


@dataclass
class HostState:
    name: str
    host: Host
    history: GroupHistory = field(default_factory=GroupHistory)


class Engine:
    """Replays hosts batch by batch into a `DecisionSink`."""

    def __init__(self, profile: Profile, policies: dict[str, Callable] | None = None, *,
                 sink: DecisionSink, explain_all: bool = False) -> None:
        self.profile = profile
        self.policies = dict(policies or {})
        self.sink = sink
        self.explain_all = explain_all
        self.hosts: dict[str, HostState] = {}

    # -- batches ----------------------------------------------------------------------------------
    def feed(self, batch: pa.RecordBatch) -> None:
        n = batch.num_rows
        if not n:
            return
        hosts = _dictionary(batch.column("host"))
        host_idx = hosts.indices.to_numpy(zero_copy_only=False)
        names = hosts.dictionary.to_pylist()
        bounds = np.flatnonzero(np.diff(host_idx)) + 1
        starts = np.concatenate([[0], bounds]).tolist()
        ends = bounds.tolist() + [n]
        arrays = _arrays(batch)
        for a, b in zip(starts, ends):
            self._host_run(self._state(names[host_idx[a]]), batch, arrays, a, b)
        self.sink.flush()

    def _state(self, name: str) -> HostState:
        state = self.hosts.get(name)
        if state is None:
            net = Net(profile=self.profile, ebpf_policies=dict(self.policies))
            state = self.hosts[name] = HostState(name, Host(net))
            state.host.on_migration = lambda m, s=state: self._migration(s, m)
        return state

    def _host_run(self, hs: HostState, batch: pa.RecordBatch, arrays: dict, a: int, b: int) -> None:
        sel = arrays["bulk"][a:b]
        sk = arrays["sk"][a:b]
        brk = np.ones(b - a, dtype=bool)
        brk[1:] = (sel[1:] != sel[:-1]) | (sel[1:] & (sk[1:] != sk[:-1]))
        starts = (np.flatnonzero(brk) + a).tolist()
        ends = starts[1:] + [b]
        for s, e in zip(starts, ends):
            if arrays["bulk"][s]:
                self._bulk(hs, batch, arrays, s, e)
            else:
                self._rows(hs, batch, np.arange(s, e))

    # -- bulk path --------------------------------------------------------------------------------
    def _bulk(self, hs: HostState, batch: pa.RecordBatch, arrays: dict, a: int, b: int) -> None:
        host = hs.host
        sock = host.sock(int(arrays["sk"][a]))
        reuse = sock.sk.sk_reuseport_cb
        hashes = arrays["hash"][a:b]
        cpu_valid = arrays["cpu_valid"][a:b]
        cpus = arrays["cpu"][a:b] if cpu_valid.all() else None
        if reuse is None:
            expected = np.full(b - a, -1, dtype=np.int64)
        elif cpus is None and cpu_valid.any():
            expected = np.full(b - a, FAITHFUL, dtype=np.int64)
        elif cpus is None and _cpu_matters(reuse):
            expected = np.full(b - a, FAITHFUL, dtype=np.int64)
        else:
            expected = np.asarray(select_run(reuse, hashes, cpus), dtype=np.int64)
        observed = arrays["observed"][a:b]
        match = expected == observed
        rows = np.arange(a, b)
        if match.any():
            label = host.label_of(reuse) if reuse is not None else sock.label
            rid = reuse.reuseport_id if reuse is not None else -1
            reasons = _bulk_reasons(reuse, hashes[match], expected[match])
            self.sink.add_bulk(hs.name, label, rid, rows[match], arrays["seq"][a:b][match],
                               arrays["sk"][a:b][match], expected[match], reasons, reuse)
        if cpus is not None:
            host.net.cpu = int(cpus[-1])
        if not match.all():
            self._rows(hs, batch, rows[~match])

    # -- row by row -------------------------------------------------------------------------------
    def _rows(self, hs: HostState, batch: pa.RecordBatch, rows: np.ndarray) -> None:
        if len(rows) == 0:
            return
        contiguous = rows[-1] - rows[0] + 1 == len(rows)
        part = batch.slice(int(rows[0]), len(rows)) if contiguous else batch.take(pa.array(rows))
        cols = {name: part.column(name).to_pylist() for name in COLUMNS}
        for i, row_index in enumerate(rows.tolist()):
            row = {name: cols[name][i] for name in COLUMNS}
            self._row(hs, row, row_index)

    def _row(self, hs: HostState, row: dict[str, Any], index: int) -> None:
        host, event = hs.host, row["event"]
        host.seq = row["seq"]
        if event in MEMBERSHIP:
            involved = [host.sock(x).sk for x in (row["sk"], row["sk2"]) if x is not None]
            token = hs.history.before(involved)
            self._apply(hs, row, index)
            hs.history.after(token, involved, host.label_of, row["seq"], event, row["sk"])
        else:
            self._apply(hs, row, index)

    def _apply(self, hs: HostState, row: dict[str, Any], index: int) -> None:
        host, event = hs.host, row["event"]
        sk, ret = row["sk"], row["ret"]
        flow = (row["laddr"], row["lport"], row["raddr"], row["rport"])
        if event == "socket":
            host.socket(sk, row["proto"] or "tcp", row["family"] or 4)
        elif event == "setsockopt":
            host.setsockopt(sk, row["name"], row["value"], row["prog"], ret)
        elif event == "sysctl":
            host.sysctl(row["name"], row["value"])
        elif event == "bind":
            host.bind(sk, row["laddr"], row["lport"], ret)
        elif event == "listen":
            host.listen(sk, ret)
        elif event == "connect":
            host.connect(sk, row["raddr"], row["rport"], ret)
        elif event == "shutdown":
            host.shutdown(sk, row["value"], row["cpu"])
        elif event == "close":
            host.close(sk, row["cpu"])
        elif event == "syn":
            host.syn(*flow, row["hash"], row["cpu"], row["payload"])
        elif event == "datagram":
            host.datagram(*flow, row["hash"], row["cpu"], row["payload"])
        elif event == "accept":
            self._observation(hs, row, index, host.accept(sk, *flow), sk)
        elif event == "recv":
            self._observation(hs, row, index, host.recv(sk, *flow), sk)
        elif event == "reset":
            self._observation(hs, row, index, host.reset(*flow), -1)
        elif event == SELECT:
            pick = kc.reuseport_select_sock(host, sk, row["hash"], row["cpu"], row["payload"])
            self._kernel_pick(hs, row, index, pick)
        elif event == "reuseport_migrate_sock":
            pick = kc.reuseport_migrate_sock(host, sk, row["sk2"], row["hash"], row["cpu"])
            self._kernel_pick(hs, row, index, replace_reason(pick, "migration"))
        else:
            self._kernel_call(hs, row, index)

    def _kernel_call(self, hs: HostState, row: dict[str, Any], index: int) -> None:
        host, event, sk = hs.host, row["event"], row["sk"]
        if event == "reuseport_alloc":
            model = kc.reuseport_alloc(host, sk, row["value"], row["proto"])
        elif event == "reuseport_add_sock":
            model = kc.reuseport_add_sock(host, sk, row["sk2"], row["value"], row["proto"])
        elif event == "reuseport_attach_prog":
            model = kc.reuseport_attach_prog(host, sk, row["prog"], row["name"], row["value"])
        elif event == "reuseport_detach_prog":
            model = kc.reuseport_detach_prog(host, sk)
        elif event == "reuseport_detach_sock":
            return kc.reuseport_detach_sock(host, sk)
        elif event == "reuseport_stop_listen_sock":
            return kc.reuseport_stop_listen_sock(host, sk, row["proto"])
        elif event == "reuseport_has_conns_set":
            return kc.reuseport_has_conns_set(host, sk)
        elif event == "reuseport_update_incoming_cpu":
            return kc.reuseport_update_incoming_cpu(host, sk, row["value"])
        elif event == "sk_state":
            return kc.sk_state(host, sk, row["value"])
        else:
            return None
        if event in RET_CALLS and row["ret"] is not None:
            self._ret_decision(hs, row, index, model)
        return None

    # -- decisions --------------------------------------------------------------------------------
    def _observation(self, hs: HostState, row: dict, index: int, exp: Expectation,
                     observed: int) -> None:
        self._decide(hs, row, index, exp.expected, observed, exp.pick, exp.unknown)

    def _kernel_pick(self, hs: HostState, row: dict, index: int, pick: Pick) -> None:
        observed = row["observed"]
        if observed is None:
            return
        reuse = hs.host.sock(row["sk"]).sk.sk_reuseport_cb
        if pick.group is None:
            label = hs.host.label_of(reuse) if reuse is not None else hs.host.sock(row["sk"]).label
            pick = replace_fields(pick, group=label, seq=row["seq"])
        self._decide(hs, row, index, pick.sk, observed, pick, pick.unknown, reuse)

    def _decide(self, hs: HostState, row: dict, index: int, expected: int, observed: int,
                pick: Pick | None, unknown: str | None, reuse=None) -> None:
        verdict = verdict_of(expected, observed, unknown)
        reason = unknown or (pick.reason if pick is not None else "lost-events")
        explanation = None
        if verdict == "mismatch" or self.explain_all:
            explanation = explain(pick, hs.history, row["event"], expected, observed, verdict)
        rid = pick.reuseport_id if pick is not None and pick.reuseport_id >= 0 else None
        self.sink.add(Decision(
            host=hs.name, seq=row["seq"], event=row["event"], laddr=row["laddr"],
            lport=row["lport"], raddr=row["raddr"], rport=row["rport"], sk=row["sk"],
            group=pick.group if pick is not None else None, reuseport_id=rid,
            expected=expected, observed=observed, verdict=verdict, reason=reason,
            explanation=explanation), index, reuse)

    def _ret_decision(self, hs: HostState, row: dict, index: int, model: int) -> None:
        observed = int(row["ret"])
        verdict = verdict_of(model, observed, None)
        reuse = hs.host.sock(row["sk"]).sk.sk_reuseport_cb
        label = hs.host.label_of(reuse)
        explanation = None
        if verdict == "mismatch" or self.explain_all:
            explanation = explain_ret(f"{row['event']}(sk {row['sk']})", model, observed)
        self.sink.add(Decision(
            host=hs.name, seq=row["seq"], event=row["event"], laddr=None, lport=None, raddr=None,
            rport=None, sk=row["sk"], group=label,
            reuseport_id=reuse.reuseport_id if reuse is not None else None,
            expected=model, observed=observed, verdict=verdict, reason="ret",
            explanation=explanation), index, reuse)

    def _migration(self, hs: HostState, m: Migration) -> None:
        if m.unknown is None:
            self.sink.migration(hs.name, m.group, "migrated" if m.to >= 0 else "reset")

    # -- end --------------------------------------------------------------------------------------
    def register_groups(self) -> None:
        """Make every group alive at the end known to the sink, with its program."""
        for name, hs in self.hosts.items():
            for reuse in hs.host.groups():
                label = hs.host.label_of(reuse)
                if label is not None:
                    self.sink.group(name, label, reuse.reuseport_id, None, reuse)


def replace_fields(pick: Pick, **changes) -> Pick:
    from dataclasses import replace

    return replace(pick, **changes)


def replace_reason(pick: Pick, reason: str) -> Pick:
    return pick if pick.unknown is not None else replace_fields(pick, reason=reason)


def _cpu_matters(reuse) -> bool:
    first = reuse.socks[0]
    return bool(first is not None and first.sk_net.profile.incoming_cpu and reuse.incoming_cpu)


def _bulk_reasons(reuse, hashes: np.ndarray, expected: np.ndarray) -> np.ndarray:
    if reuse is None or reuse.num_socks == 0:
        return np.full(len(expected), "hash", dtype=object)
    if _cpu_matters(reuse):
        return np.full(len(expected), "incoming-cpu", dtype=object)
    ids = np.array([s.sk_id for s in reuse.live()], dtype=np.int64)
    order = np.argsort(ids)
    pos = np.searchsorted(ids[order], expected)
    slot = order[np.minimum(pos, len(ids) - 1)]
    start = ((hashes.astype(np.uint64) * np.uint64(reuse.num_socks)) >> np.uint64(32)).astype(np.int64)
    return np.where((expected >= 0) & (slot != start), "established-skip", "hash").astype(object)


def _dictionary(column: pa.Array) -> pa.DictionaryArray:
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if pa.types.is_dictionary(column.type):
        return column
    return pc.dictionary_encode(column)


def _int(column: pa.Array, fill: int, dtype) -> tuple[np.ndarray, np.ndarray]:
    valid = column.is_valid().to_numpy(zero_copy_only=False)
    values = pc.fill_null(column, fill).to_numpy(zero_copy_only=False).astype(dtype)
    return values, valid


def _arrays(batch: pa.RecordBatch) -> dict[str, np.ndarray]:
    events = _dictionary(batch.column("event"))
    names = events.dictionary.to_pylist()
    code = names.index(SELECT) if SELECT in names else -1
    is_select = events.indices.to_numpy(zero_copy_only=False) == code
    sk, sk_valid = _int(batch.column("sk"), -1, np.int64)
    hashes, hash_valid = _int(batch.column("hash"), 0, np.uint32)
    observed, observed_valid = _int(batch.column("observed"), -1, np.int64)
    cpu, cpu_valid = _int(batch.column("cpu"), 0, np.int32)
    payload_null = batch.column("payload").is_null().to_numpy(zero_copy_only=False)
    seq, _ = _int(batch.column("seq"), 0, np.int64)
    return {
        "bulk": is_select & sk_valid & hash_valid & observed_valid & payload_null,
        "sk": sk, "hash": hashes, "observed": observed, "cpu": cpu, "cpu_valid": cpu_valid,
        "seq": seq,
    }


__all__ = ["Engine", "HostState"]
