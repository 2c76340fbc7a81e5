"""Drive a per-host model over record batches in `seq` order and turn observations into decisions.

Pure: it consumes the batches handed to it. Hosts are independent. Socket-layer events go through
`tracekit.kernel.socket_layer.Host`; kernel-layer events call `sock_reuseport.c`'s twins directly.

Kernel-layer `reuseport_select_sock` rows with a hash, an observation and nothing a program could
read are decided in bulk: only a group change can change their answer, so a batch is walked once
through its other rows ("special" rows, replayed one by one), and each run of selections between
two of them is tagged with the state of each group it selects from (`fast.GroupState`, kept until
a special row may have changed that group). Then every tagged row of the batch is decided at once
(`fast.tabulate`). Rows whose group has a program (or needs a CPU the row lacks) are replayed one
by one during the walk; rows whose bulk answer differs from the observation are replayed one by one
afterwards on a copy of their group state, which also gives them their explanations. The sink
applies every decision in row order.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tracekit.errors import StoryError
from tracekit.kernel.bpf import Skb
from tracekit.kernel.net import Net
from tracekit.kernel.profiles import Profile
from tracekit.kernel.sock import Sock
from tracekit.kernel.sock_reuseport import SockReuseport
from tracekit.kernel.socket_layer import Host, Pick
from tracekit.kernel.socket_layer import kernel_calls as kc
from tracekit.kernel.socket_layer.host import Expectation, Migration
from tracekit.kernel.socket_layer.selection import replace_pick, select_traced
from tracekit.replay import fast, hooks
from tracekit.replay.decision import Decision, verdict_of
from tracekit.replay.explain import UNKNOWN_TEXT, explain, explain_ret
from tracekit.replay.history import GroupHistory, HistoryView
from tracekit.replay.state import HostState, Snapshot
from tracekit.replay.sink import DecisionSink
from tracekit.replay.timeline import Timeline
from tracekit.replay.walk import Columns, Walk
from tracekit.trace.checks import is_ip_text
from tracekit.trace.schema import load_spec

BULK = True
"""Decide selections in bulk (False: every row one by one, which the tests compare against)."""

WALK_ROWS = 65_536
"""Rows of a fed batch walked at once (plus those a walk held back): the bulk paths' cost per
row is lowest about here; a larger batch is walked a slice at a time."""

SELECT = "reuseport_select_sock"
# events that change a group's membership: the history records what they did
MEMBERSHIP = {"bind", "listen", "connect", "shutdown", "close", "reuseport_alloc",
              "reuseport_add_sock", "reuseport_detach_sock", "reuseport_stop_listen_sock"}
# socket-layer operations of a program on one of its sockets (`sk`). `setsockopt` is a context
# event of both layers, so like kernel-layer events it brings a socket in on first use; an
# observation (`accept`, `recv`) of a socket the model does not know is judged `lost-events`.
OBSERVATIONS = {"accept", "recv", "reset"}
ON_A_SOCKET = {"bind", "listen", "connect", "shutdown", "close"}
# membership events that never migrate (only a stopping listener does: `close`, `shutdown`), so
# nothing reads the timeline while they run: where none of their sockets is in a group before,
# the history's and the timeline's hooks are called after them (`Engine._record`), if at all
UNHOOKED_WITHOUT_GROUP = MEMBERSHIP - {"close", "shutdown"}
RET_CALLS = {"reuseport_alloc", "reuseport_add_sock", "reuseport_attach_prog",
             "reuseport_detach_prog"}
# kernel-layer calls other than selection and migration: the model's function of the same name
KERNEL_CALLS: dict[str, Callable[[Host, dict[str, Any]], int | None]] = {
    "reuseport_alloc": lambda h, r: kc.reuseport_alloc(h, r["sk"], r["value"], r["proto"],
                                                       r["laddr"], r["lport"], r["family"]),
    "reuseport_add_sock":
        lambda h, r: kc.reuseport_add_sock(h, r["sk"], r["sk2"], r["value"], r["proto"],
                                           r["laddr"], r["lport"], r["family"]),
    "reuseport_attach_prog":
        lambda h, r: kc.reuseport_attach_prog(h, r["sk"], r["prog"], r["name"], r["value"],
                                              r["ret"]),
    "reuseport_detach_prog": lambda h, r: kc.reuseport_detach_prog(h, r["sk"]),
    "reuseport_detach_sock": lambda h, r: kc.reuseport_detach_sock(h, r["sk"]),
    "reuseport_stop_listen_sock":
        lambda h, r: kc.reuseport_stop_listen_sock(h, r["sk"], r["proto"]),
    "reuseport_has_conns_set": lambda h, r: kc.reuseport_has_conns_set(h, r["sk"]),
    "reuseport_update_incoming_cpu":
        lambda h, r: kc.reuseport_update_incoming_cpu(h, r["sk"], r["value"]),
    "sk_state": lambda h, r: kc.sk_state(h, r["sk"], r["value"]),
}


class Engine:
    """Replays hosts batch by batch into a `DecisionSink`; the faithful per-row path
    (`tracekit.replay.state.Faithful`) for the walks."""

    def __init__(self, profile: Profile, policies: dict[str, Callable] | None = None, *,
                 sink: DecisionSink, explain_all: bool = False,
                 timeline: Timeline | None = None) -> None:
        self.profile = profile
        self.timeline = timeline  # membership changes and migrations, when asked
        self.one_pass = hooks.OnePass(timeline)  # its and the history's hooks, one-socket rows
        self.policies = dict(policies or {})
        self.sink = sink
        self.explain_all = explain_all
        self.hosts: dict[str, HostState] = {}
        self.walks = 0
        self.held: pa.RecordBatch | None = None  # rows `feed` left to the next batch

    # -- batches ----------------------------------------------------------------------------------
    def feed(self, batch: pa.RecordBatch) -> None:
        """Replay the rows of `batch`, which continue those fed before, `WALK_ROWS` at a time. A
        bulk socket-layer walk may hold back its last rows (flows still waiting for their
        observations) and replay them with the next rows: a slice of `batch` that begins at the
        held rows, so only rows held over from an earlier batch are copied (`_joined`). `drain`
        replays what is held at the end (`finish` does too)."""
        n = batch.num_rows
        if not n:
            return
        held, self.held = self.held, None
        start = end = 0  # rows start:end of `batch` are replayed next, after `held`
        while end < n:
            end = min(end + WALK_ROWS, n)
            if held is None:
                start += self._feed(batch.slice(start, end - start), open_end=True)
                continue
            piece = _joined(held, batch.slice(start, end - start))
            done = self._feed(piece, open_end=True)
            if done >= held.num_rows:
                held, start = None, start + done - held.num_rows
            else:  # it held rows of an earlier batch again: they go on with the next rows
                held, start = piece.slice(done), end
        self.held = held if held is not None else batch.slice(start) if start < n else None

    def drain(self) -> None:
        """Replay the rows `feed` held back: call it when no batch follows."""
        held, self.held = self.held, None
        if held is not None:
            self._feed(held, open_end=False)

    def _feed(self, batch: pa.RecordBatch, open_end: bool) -> int:
        """Replay `batch`; returns how many of its rows (from the first) it replayed: all, or
        with `open_end` fewer when the last host's walk holds back the rest."""
        n = batch.num_rows
        if not n:
            return 0
        hosts = _dictionary(batch.column("host"))
        host_idx = hosts.indices.to_numpy(zero_copy_only=False)
        names = hosts.dictionary.to_pylist()
        bounds = np.flatnonzero(host_idx[1:] != host_idx[:-1]) + 1
        starts = [0] + bounds.tolist()
        ends = bounds.tolist() + [n]
        columns = Columns(batch, bulk=BULK and not self.explain_all)
        replayed = n
        for a, b in zip(starts, ends):
            hs = self._state(names[host_idx[a]])
            self.walks += 1
            done = Walk(self, hs, columns, a, b, self.walks).run(open_end and b == n)
            if done < b - a:
                replayed = a + done
            hs.host.park()
        self.sink.flush()
        return replayed

    def _state(self, name: str) -> HostState:
        state = self.hosts.get(name)
        if state is None:
            net = Net(profile=self.profile, ebpf_policies=dict(self.policies))
            state = self.hosts[name] = HostState(name, Host(net))
            state.host.on_migrations = lambda done, s=state: self._migrations(s, done)
        return state

    # -- row by row -------------------------------------------------------------------------------
    def row(self, hs: HostState, row: dict[str, Any], index: int) -> None:
        """Replay input row `index` through the model, one by one (`Faithful.row`)."""
        host, event = hs.host, row["event"]
        try:
            host.seq = row["seq"]
            _check_row(row, event)
            if event not in MEMBERSHIP:
                self._apply(hs, row, index)
                return
            sk, sk2 = row["sk"], row["sk2"]
            if event in ON_A_SOCKET:
                _check_socket(host, sk)
            if sk2 is None and sk is not None and hooks.ONE_PASS:
                s = host.sock(sk).sk
                one_pass, seq = self.one_pass, row["seq"]
                token = one_pass.before(hs, s, seq, event, sk)
                self._apply(hs, row, index)
                one_pass.after(hs, token, s, seq, event, sk)
                return
            involved = ([host.sock(sk).sk] if sk2 is None and sk is not None
                        else [host.sock(x).sk for x in (sk, sk2) if x is not None])
            if event in UNHOOKED_WITHOUT_GROUP and _groupless(involved):
                # in no group before: the history and the timeline have nothing to record yet
                self._apply(hs, row, index)
                if not _groupless(involved):
                    self._record(hs, {}, involved, row["seq"], event, sk)
                return
            token = hs.history.before(involved)
            timeline = self.timeline
            if timeline is not None:
                timeline.before(hs.name, token, host.label_of, row["seq"], event, sk)
            self._apply(hs, row, index)
            now = hs.history.after(token, involved, host.label_of, row["seq"], event, sk)
            if timeline is not None:
                timeline.after(involved, now)
        except StoryError as error:
            error.host, error.seq = hs.name, row["seq"]
            raise

    def _record(self, hs: HostState, token: dict, involved: list, seq: int, event: str,
                sk: int | None) -> None:
        """The history's and the timeline's hooks around an event whose groups before were
        `token` (`GroupHistory.before`), called after it: what calling them around it records
        when nothing reads the timeline during the event (it migrates nothing)."""
        host, timeline = hs.host, self.timeline
        if timeline is not None:
            timeline.before(hs.name, token, host.label_of, seq, event, sk)
        now = hs.history.after(token, involved, host.label_of, seq, event, sk)
        if timeline is not None:
            timeline.after(involved, now)

    def _apply(self, hs: HostState, row: dict[str, Any], index: int) -> None:
        host, event = hs.host, row["event"]
        call = KERNEL_CALLS.get(event)
        if call is not None:
            refused = event in RET_CALLS and row["ret"] is not None and row["ret"] < 0
            undo = kc.checkpoint(host, [row["sk"], row["sk2"]]) if refused else None
            model = call(host, row)
            if undo is not None and model == 0:
                undo()  # the kernel refused: its group is as it was
            if event in RET_CALLS and row["ret"] is not None:
                self._ret_decision(hs, row, index, model)
            return
        sk, ret = row["sk"], row["ret"]
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
            host.syn(row["laddr"], row["lport"], row["raddr"], row["rport"], row["hash"],
                     row["cpu"], row["payload"], row["sk_hash"])
        elif event == "datagram":
            host.datagram(row["laddr"], row["lport"], row["raddr"], row["rport"], row["hash"],
                          row["cpu"], row["payload"])
        elif event in OBSERVATIONS:
            self.observe(hs, row, index)
        elif event == SELECT:
            pick = kc.reuseport_select_sock(host, sk, row["hash"], row["cpu"], row["payload"])
            self._kernel_pick(hs, row, index, pick)
        elif event == "reuseport_migrate_sock":
            pick = kc.reuseport_migrate_sock(host, sk, row["sk2"], row["hash"], row["cpu"])
            self._kernel_pick(hs, row, index, replace_reason(pick, "migration"))
            if self.timeline is not None:
                reuse = host.sock(sk).sk.sk_reuseport_cb
                flow = (row["laddr"], row["lport"], row["raddr"], row["rport"])
                self.timeline.migration(hs.name, row["seq"], pick.group or host.label_of(reuse),
                                        sk, pick.sk, pick.unknown, flow, event=event,
                                        reuseport_id=reuse.reuseport_id if reuse else None)

    # -- decisions --------------------------------------------------------------------------------
    def decide(self, hs: HostState, row: dict, index: int, exp: Expectation,
               observed: int) -> None:
        """Observation row `index`, already paired by the host (`exp`), decided
        (`Faithful.decide`)."""
        self._decide(hs, row, index, exp.expected, observed, exp.pick, exp.unknown)

    def observe(self, hs: HostState, row: dict, index: int,
                history: HistoryView | None = None) -> None:
        """Observation row `index` (`accept`, `recv`, `reset`), paired by the host's pairing and
        decided (`Faithful.observe`); `history`: the group's history when its arrival was
        decided, where that is not now. A `recv` the pairing defers is decided by `finish`."""
        host, event, sk = hs.host, row["event"], row["sk"]
        flow = (row["laddr"], row["lport"], row["raddr"], row["rport"])
        if event == "accept":
            exp, observed = host.accept(sk, *flow), sk
        elif event == "recv":
            exp, observed = host.recv(sk, *flow, row["payload"], token=_deferred_row(row)), sk
            if exp.deferred:
                return
        else:
            exp, observed = host.reset(*flow), -1
        self._decide(hs, row, index, exp.expected, observed, exp.pick, exp.unknown, None, history)

    def _kernel_pick(self, hs: HostState, row: dict, index: int, pick: Pick) -> None:
        observed = row["observed"]
        if observed is None:
            return
        reuse = hs.host.sock(row["sk"]).sk.sk_reuseport_cb
        if pick.group is None:
            label = hs.host.label_of(reuse) if reuse is not None else hs.host.sock(row["sk"]).label
            pick = replace_pick(pick, group=label, seq=row["seq"])
        self._decide(hs, row, index, pick.sk, observed, pick, pick.unknown, reuse)

    def snapshot(self, hs: HostState, s, reuse: SockReuseport | None) -> Snapshot:
        """The group `reuse` (None: the socket `s` outside any group) as selections see it now."""
        label = hs.host.label_of(reuse) if reuse is not None else s.label
        state = fast.GroupState.of(reuse) if reuse is not None else None
        return Snapshot(reuse, state, label, hs.history.view(label), hs.history.mark(label),
                        forced=(reuse is not None and reuse.prog is not None)
                        or s.sk.sk_id in hs.host.membership_unknown)

    def late_select(self, hs: HostState, snap: Snapshot, row: dict, index: int) -> None:
        """A bulk-decided selection replayed one by one on its group's state at the time (the
        model has moved on): what `_apply` gives the row then, explanation included."""
        if snap.state is None:
            pick = Pick(sk=-1, reason="hash", group=snap.label, seq=row["seq"])
        else:
            sock = snap.state.replica(row["sk"], row["cpu"])
            skb = Skb(payload=None, len=None, cpu=row["cpu"])
            _chosen, pick = select_traced(sock, row["hash"], skb, 0, cpu_known=row["cpu"] is not None)
            pick = replace_pick(pick, group=snap.label, seq=row["seq"])
        self._decide(hs, row, index, pick.sk, row["observed"], pick, pick.unknown, snap.reuse,
                     snap.history)

    def _decide(self, hs: HostState, row: dict, index: int, expected: int, observed: int,
                pick: Pick | None, unknown: str | None, reuse=None,
                history: GroupHistory | HistoryView | None = None) -> None:
        verdict = verdict_of(expected, observed, unknown)
        reason = unknown or (pick.reason if pick is not None else "lost-events")
        explanation = None
        if verdict == "mismatch" or self.explain_all:
            explanation = explain(pick, history or hs.history, row["event"], expected, observed,
                                  verdict, self.profile)
        rid = pick.reuseport_id if pick is not None and pick.reuseport_id >= 0 else None
        self.sink.add(Decision(
            host=hs.name, seq=row["seq"], event=row["event"], laddr=row["laddr"],
            lport=row["lport"], raddr=row["raddr"], rport=row["rport"], sk=row["sk"],
            group=pick.group if pick is not None else None, reuseport_id=rid,
            expected=expected, observed=observed, verdict=verdict, reason=reason,
            explanation=explanation), index, reuse)

    def _ret_decision(self, hs: HostState, row: dict, index: int, model: int | None) -> None:
        """`model` None: the model cannot tell (the socket's group membership is unknown)."""
        observed = int(row["ret"])
        unknown = kc.MEMBERSHIP_UNKNOWN if model is None else None
        verdict = verdict_of(model if model is not None else -1, observed, unknown)
        reuse = hs.host.sock(row["sk"]).sk.sk_reuseport_cb
        label = hs.host.label_of(reuse)
        explanation = None
        if verdict == "mismatch" or self.explain_all:
            explanation = (explain_ret(f"{row['event']}(sk {row['sk']})", model, observed)
                           if model is not None else UNKNOWN_TEXT[unknown])
        self.sink.add(Decision(
            host=hs.name, seq=row["seq"], event=row["event"], laddr=None, lport=None, raddr=None,
            rport=None, sk=row["sk"], group=label,
            reuseport_id=reuse.reuseport_id if reuse is not None else None,
            expected=model if model is not None else -1, observed=observed, verdict=verdict,
            reason=unknown or "ret",
            explanation=explanation), index, reuse)

    def _migrations(self, hs: HostState, done: list[Migration]) -> None:
        """The queued connections of one stopping listener, migrated or reset (`done`, in
        queue order: one listener, one group)."""
        if self.timeline is not None:
            first = done[0]
            self.timeline.migrations(hs.name, hs.host.seq, first.group, first.listener, done)
        # the predicted outcomes, counted in order of first appearance (as one by one)
        moved = [to >= 0 for _listener, _flow, to, unknown, _group in done if unknown is None]
        if moved:
            migrated = moved.count(True)
            counts = (("migrated", migrated), ("reset", len(moved) - migrated))
            for outcome, count in counts if moved[0] else counts[::-1]:
                if count:
                    self.sink.migration(hs.name, done[0].group, outcome, count)

    # -- end --------------------------------------------------------------------------------------
    def finish(self, complete: bool) -> None:
        """Decide what only the end of the trace settles: each `recv` that was deferred because no
        datagram the model put on its socket explains it (`tracekit.kernel.socket_layer.pairing`),
        and, for a trace whose observations are complete (`tracekit.observations=complete`: every
        datagram sent is either received or was dropped), each datagram nobody received: the
        kernel dropped it (observed -1), where the model expected a socket or a drop. Both in
        `seq` order, host by host."""
        self.drain()
        index = 0
        for name in sorted(self.hosts):
            hs = self.hosts[name]
            late: list[tuple[int, dict, Expectation, int]] = []
            for row, exp in hs.host.settle():
                late.append((row["seq"], row, exp, row["sk"]))
            if complete:
                for (laddr, lport, raddr, rport), pick in hs.host.unreceived():
                    row = {"seq": pick.seq, "event": "datagram", "laddr": laddr, "lport": lport,
                           "raddr": raddr, "rport": rport, "sk": None}
                    expected = -1 if pick.dropped or pick.sk < 0 else pick.sk
                    late.append((pick.seq, row, Expectation(expected, pick, pick.unknown), -1))
            late.sort(key=lambda item: item[0] if item[0] is not None else -1)
            for _seq, row, exp, observed in late:
                self.decide(hs, row, index, exp, observed)
                index += 1
        self.sink.flush()

    def register_groups(self) -> None:
        """Make every group alive at the end known to the sink, with its program."""
        for name, hs in self.hosts.items():
            for reuse in hs.host.groups():
                label = hs.host.label_of(reuse)
                if label is not None:
                    self.sink.group(name, label, reuse.reuseport_id, None, reuse)


def _check_row(row: dict[str, Any], event: str) -> None:
    """`validate` refuses a row without a column its event requires, and every address that is
    not one; replay refuses those it reads (a trace it was not given through `validate`)."""
    for column in _REQUIRES.get(event, ()):
        if row[column] is None:
            raise StoryError(f"missing (event {event!r} requires it)", column)
    for column in ("laddr", "raddr"):
        text = row[column]
        if text is not None and text not in _IP_TEXTS:
            if not is_ip_text(text):
                raise StoryError(f"{text!r} is not an IPv4 or IPv6 address", column)
            if len(_IP_TEXTS) < IP_TEXTS:
                _IP_TEXTS.add(text)


_REQUIRES = {event.name: event.requires for event in load_spec().events}
IP_TEXTS = 4096
_IP_TEXTS: set[str] = set()  # addresses `is_ip_text` accepted (a trace names a few, often)


def _groupless(socks: list[Sock]) -> bool:
    for sk in socks:
        if sk.sk_reuseport_cb is not None:
            return False
    return True


def _check_socket(host: Host, sk: int) -> None:
    """A socket-layer operation needs a socket that a `socket` row (or, in a kernel-layer trace,
    a call into sock_reuseport.c) brought in, and that is not closed."""
    s = host.socks.get(sk)
    if s is None and sk not in host.parked:
        raise StoryError(f"sk {sk} does not exist: no socket row (nor kernel-layer event) "
                         "brought it in before", "sk")
    if s is not None and s.closed:
        raise StoryError(f"sk {sk} was closed before (a new socket row must bring it back)", "sk")


def _deferred_row(row: dict[str, Any]) -> dict[str, Any]:
    """What a deferred `recv` decision needs of its row (not its payload)."""
    return {key: row[key] for key in ("seq", "event", "laddr", "lport", "raddr", "rport", "sk")}


def replace_reason(pick: Pick, reason: str) -> Pick:
    return pick if pick.unknown is not None else replace_pick(pick, reason=reason)


def _joined(first: pa.RecordBatch, second: pa.RecordBatch) -> pa.RecordBatch:
    """One batch of the rows of `first`, then those of `second` (dictionaries unified)."""
    return pa.concat_batches([first, second])


def _dictionary(column: pa.Array) -> pa.DictionaryArray:
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if pa.types.is_dictionary(column.type):
        return column
    return pc.dictionary_encode(column)


__all__ = ["BULK", "Engine", "HostState", "Snapshot"]  # the last two re-exported from .state
