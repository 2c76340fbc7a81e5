"""Random operation sequences: tracekit.kernel.sock_reuseport against a small reference model.

The reference below is written from the C semantics with plain lists (a group is its listening
list and its closed list, in kernel array order) and shares no code with tracekit.kernel. The
machine shrinks INIT_SOCKS to 2 and U16_MAX to 4 so a handful of sockets exercises
reuseport_grow() and its cap (eviction of a closed socket, -ENOMEM).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from tracekit.kernel import sock_reuseport as sr
from tracekit.kernel.bpf import DROP, UNKNOWN, BpfProg, ErrPtr, Skb
from tracekit.kernel.net import Net
from tracekit.kernel.profiles import BY_NAME
from tracekit.kernel.sock import IPPROTO_TCP, IPPROTO_UDP, TCP_ESTABLISHED, TCP_LISTEN, Sock

N_SOCKS = 10
SMALL_INIT, SMALL_CAP = 2, 4
EBUSY, ENOMEM = -16, -12
PROG_KINDS = ("cbpf0", "cbpf1", "cbpf9", "sel", "pass", "drop", "ghost", "mig")
FAILURE = "TCPMigrateReqFailure"


# --- the reference model ------------------------------------------------------------------------

@dataclass(eq=False)
class RGroup:
    rid: int
    max_socks: int
    bind_inany: bool
    live: list[int] = field(default_factory=list)
    closed: list[int] = field(default_factory=list)  # closed[0] is socks[max - num_closed]
    prog: str | None = None
    has_conns: bool = False


@dataclass
class RSock:
    udp: bool
    group: RGroup | None = None
    hashed: bool = False
    established: bool = False
    cpu: int = -1


class Reference:
    def __init__(self, incoming_cpu: bool):
        self.incoming_cpu = incoming_cpu
        self.socks = [RSock(udp=i % 4 == 3) for i in range(N_SOCKS)]
        self.ids: set[int] = set()
        self.sysctl = 0
        self.failures = 0

    # group bookkeeping
    def new_group(self, bind_inany: bool) -> RGroup:
        rid = min(set(range(len(self.ids) + 1)) - self.ids)
        self.ids.add(rid)
        return RGroup(rid, SMALL_INIT, bind_inany)

    def free_if_empty(self, g: RGroup) -> None:
        if not g.live and not g.closed:
            self.ids.discard(g.rid)

    def remove_live(self, g: RGroup, i: int) -> None:
        at = g.live.index(i)
        g.live[at] = g.live[-1]
        g.live.pop()

    def remove_closed(self, g: RGroup, i: int) -> None:
        at = g.closed.index(i)
        g.closed[at] = g.closed[0]
        g.closed.pop(0)

    def make_room(self, g: RGroup) -> bool:
        if len(g.live) + len(g.closed) < g.max_socks:
            return True
        if g.max_socks * 2 <= SMALL_CAP:
            g.max_socks *= 2
            return True
        if g.closed:
            victim = g.closed[0]
            self.remove_closed(g, victim)
            self.socks[victim].group = None
            return True
        return False

    def counter(self, g: RGroup) -> int:
        if not self.incoming_cpu:
            return 0
        return sum(self.socks[i].cpu >= 0 for i in g.live + g.closed)

    # operations
    def alloc(self, i: int, bind_inany: bool) -> int:
        g = self.socks[i].group
        if g is not None:
            if g.closed:
                return self.resurrect(i, g, None, bind_inany)
            g.bind_inany = g.bind_inany or bind_inany
            return 0
        g = self.new_group(bind_inany)
        g.live.append(i)
        self.socks[i].group = g
        return 0

    def add(self, i: int, j: int) -> int:
        target = self.socks[j].group
        assert target is not None
        old = self.socks[i].group
        if old is not None and old.closed:
            return self.resurrect(i, old, target, target.bind_inany)
        if old is not None and len(old.live) != 1:
            return EBUSY
        if not self.make_room(target):
            return ENOMEM
        target.live.append(i)
        self.socks[i].group = target
        if old is not None:
            self.ids.discard(old.rid)
        return 0

    def resurrect(self, i: int, old: RGroup, target: RGroup | None, bind_inany: bool) -> int:
        if old is target:
            self.remove_closed(old, i)
            old.live.append(i)
            return 0
        if target is None:
            target = self.new_group(bind_inany)
        elif not self.make_room(target):
            return ENOMEM
        self.remove_closed(old, i)
        target.live.append(i)
        self.socks[i].group = target
        self.free_if_empty(old)
        return 0

    def detach(self, i: int) -> None:
        g = self.socks[i].group
        if g is None:
            return
        self.socks[i].group = None
        if i in g.closed:
            self.remove_closed(g, i)
        else:
            self.remove_live(g, i)
        self.free_if_empty(g)

    def stop_listen(self, i: int) -> None:
        g = self.socks[i].group
        assert g is not None
        if not self.socks[i].udp and (self.sysctl or g.prog == "mig"):
            self.remove_live(g, i)
            g.closed.insert(0, i)
        else:
            self.detach(i)

    def by_hash(self, g: RGroup, h: int, cpu: int) -> int | None:
        n = len(g.live)
        start = (h * n) >> 32
        order = [g.live[(start + step) % n] for step in range(n)]
        candidates = [i for i in order if not self.socks[i].established]
        if not candidates:
            return None
        if self.counter(g):
            return next((i for i in candidates if self.socks[i].cpu == cpu), candidates[0])
        return candidates[0]

    def select(self, i: int, h: int, cpu: int, with_skb: bool) -> object:
        g = self.socks[i].group
        if g is None or not g.live:
            return None
        if g.prog is not None and with_skb:
            if g.prog.startswith("cbpf"):
                k = int(g.prog[4:])
                if k < len(g.live):
                    return g.live[k]
            elif g.prog == "sel":
                return g.live[-1]
            elif g.prog == "drop":
                return "drop"
            elif g.prog == "ghost":
                return "unknown"
        return self.by_hash(g, h, cpu)

    def migrate(self, i: int, h: int, cpu: int) -> object:
        g = self.socks[i].group
        if g is None:
            return None
        if not g.live or (g.prog != "mig" and not self.sysctl):
            self.failures += 1
            return None
        chosen = self.by_hash(g, h, cpu)
        if chosen is None:
            self.failures += 1
        return chosen


# --- driving both ----------------------------------------------------------------------------

POLICIES = {
    "sel": lambda md: md.socks[-1],
    "pass": lambda md: None,
    "drop": lambda md: DROP,
    "mig": lambda md: None,
}


def make_prog(kind: str) -> BpfProg:
    if kind.startswith("cbpf"):
        return BpfProg.cbpf(((0x06, 0, 0, int(kind[4:])),))
    return BpfProg.ebpf(kind, migrate=kind == "mig")


def outcome(result: object) -> object:
    if result is UNKNOWN:
        return "unknown"
    if isinstance(result, ErrPtr):
        return "drop"
    if isinstance(result, Sock):
        return result.sk_id
    return result


socket_index = st.integers(0, N_SOCKS - 1)
u32 = st.integers(0, 0xFFFFFFFF)
cpus = st.integers(0, 3)


class ReuseportMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.saved = (sr.INIT_SOCKS, sr.U16_MAX)
        sr.INIT_SOCKS, sr.U16_MAX = SMALL_INIT, SMALL_CAP

    def teardown(self):
        sr.INIT_SOCKS, sr.U16_MAX = self.saved

    @initialize(profile=st.sampled_from(["5.14", "6.2", "6.5", "6.10", "6.13"]), migrate=st.sampled_from([0, 1]))
    def setup(self, profile, migrate):
        self.net = Net(profile=BY_NAME[profile], sysctl_tcp_migrate_req=migrate,
                       ebpf_policies=dict(POLICIES))
        self.ref = Reference(BY_NAME[profile].incoming_cpu)
        self.ref.sysctl = migrate
        self.socks = [
            Sock(sk_id=i, sk_net=self.net, sk_protocol=IPPROTO_UDP if i % 4 == 3 else IPPROTO_TCP,
                 sk_reuseport=True)
            for i in range(N_SOCKS)
        ]

    # helpers
    def is_live(self, i: int) -> bool:
        g = self.ref.socks[i].group
        return g is not None and i in g.live

    def is_closed(self, i: int) -> bool:
        g = self.ref.socks[i].group
        return g is not None and i in g.closed

    def listening(self) -> list[int]:
        return [i for i in range(N_SOCKS) if self.is_live(i) and self.ref.socks[i].hashed]

    def set_hashed(self, i: int, hashed: bool) -> None:
        self.socks[i].hashed = hashed
        self.ref.socks[i].hashed = hashed
        self.socks[i].sk_state = TCP_LISTEN
        self.ref.socks[i].established = False

    # rules: each draws only the sockets it applies to, so few steps are wasted
    def attached(self) -> list[int]:
        return [i for i in range(N_SOCKS) if self.ref.socks[i].group is not None]

    def closed_socks(self) -> list[int]:
        return [i for i in range(N_SOCKS) if self.is_closed(i)]

    def live_socks(self) -> list[int]:
        return [i for i in range(N_SOCKS) if self.is_live(i)]

    @rule(data=st.data(), bind_inany=st.booleans())
    def alloc(self, data, bind_inany):
        # Never for a listener of a group with closed sockets: the kernel does not re-allocate it.
        ok = [i for i in range(N_SOCKS)
              if not (self.is_live(i) and self.ref.socks[i].group.closed)]
        i = data.draw(st.sampled_from(ok))
        assert sr.reuseport_alloc(self.socks[i], bind_inany) == self.ref.alloc(i, bind_inany)
        self.set_hashed(i, True)

    @precondition(lambda self: self.listening())
    @rule(data=st.data())
    def add(self, data):
        j = data.draw(st.sampled_from(self.listening()))
        target = self.ref.socks[j].group
        # A listener is never added to a group again.
        ok = [i for i in range(N_SOCKS) if i != j and not (
            self.is_live(i) and (self.ref.socks[i].group.closed or self.ref.socks[i].group is target))]
        i = data.draw(st.sampled_from(ok))
        ret = sr.reuseport_add_sock(self.socks[i], self.socks[j], False)
        assert ret == self.ref.add(i, j)
        if ret == 0:
            self.set_hashed(i, True)

    @precondition(lambda self: self.live_socks())
    @rule(data=st.data())
    def stop_listen(self, data):
        i = data.draw(st.sampled_from(self.live_socks()))
        sr.reuseport_stop_listen_sock(self.socks[i])
        self.ref.stop_listen(i)
        self.set_hashed(i, False)

    @rule(i=socket_index)
    def close(self, i):
        sr.reuseport_detach_sock(self.socks[i])
        self.ref.detach(i)
        self.set_hashed(i, False)

    @rule(value=st.sampled_from([0, 1]))
    def sysctl(self, value):
        self.net.sysctl_tcp_migrate_req = value
        self.ref.sysctl = value

    @rule(data=st.data(), kind=st.sampled_from(PROG_KINDS))
    def attach_prog(self, data, kind):
        # Not for an unhashed listener of a group with closed sockets (not reachable).
        ok = [i for i in range(N_SOCKS) if not (
            self.is_live(i) and self.ref.socks[i].group.closed and not self.ref.socks[i].hashed)]
        i = data.draw(st.sampled_from(ok))
        expected = 0 if self.ref.socks[i].hashed else self.ref.alloc(i, False)
        assert sr.reuseport_attach_prog(self.socks[i], make_prog(kind)) == expected
        self.ref.socks[i].group.prog = kind

    @rule(i=socket_index)
    def detach_prog(self, i):
        g = self.ref.socks[i].group
        if g is None or (not self.ref.socks[i].hashed and g.closed) or g.prog is None:
            expected = -2
        else:
            expected, g.prog = 0, None
        assert sr.reuseport_detach_prog(self.socks[i]) == expected

    @precondition(lambda self: self.live_socks())
    @rule(data=st.data(), connected=st.booleans())
    def connect(self, data, connected):
        i = data.draw(st.sampled_from(self.live_socks()))
        self.socks[i].sk_state = TCP_ESTABLISHED if connected else TCP_LISTEN
        self.ref.socks[i].established = connected
        if connected:
            sr.reuseport_has_conns_set(self.socks[i])
            self.ref.socks[i].group.has_conns = True

    @rule(i=socket_index, cpu=st.integers(-1, 3))
    def incoming_cpu(self, i, cpu):
        sr.reuseport_update_incoming_cpu(self.socks[i], cpu)
        self.ref.socks[i].cpu = cpu

    @precondition(lambda self: self.attached())
    @rule(data=st.data(), h=u32, cpu=cpus, with_skb=st.booleans())
    def select(self, data, h, cpu, with_skb):
        i = data.draw(st.sampled_from(self.attached()))
        self.net.cpu = cpu
        skb = Skb(payload=b"", len=0, cpu=cpu) if with_skb else None
        got = outcome(sr.reuseport_select_sock(self.socks[i], h, skb, 8))
        assert got == self.ref.select(i, h, cpu, with_skb)

    @precondition(lambda self: self.closed_socks())
    @rule(data=st.data(), h=u32, cpu=cpus)
    def migrate(self, data, h, cpu):
        i = data.draw(st.sampled_from(self.closed_socks()))
        self.net.cpu = cpu
        child = Sock(sk_id=100, sk_net=self.net, sk_hash=h)
        got = outcome(sr.reuseport_migrate_sock(self.socks[i], child, None))
        assert got == self.ref.migrate(i, h, cpu)

    # after every step
    @invariant()
    def same_groups(self):
        if not hasattr(self, "ref"):
            return
        assert self.net.mib[FAILURE] == self.ref.failures
        assert self.net.reuseport_ida.used == self.ref.ids
        for i, (sk, ref_sk) in enumerate(zip(self.socks, self.ref.socks)):
            reuse, g = sk.sk_reuseport_cb, ref_sk.group
            assert (reuse is None) == (g is None), f"sk {i}"
            if g is None:
                continue
            assert [s.sk_id for s in reuse.live()] == g.live, f"sk {i} live section"
            assert [s.sk_id for s in reuse.closed()] == g.closed, f"sk {i} closed section"
            assert (reuse.reuseport_id, reuse.max_socks, reuse.bind_inany, reuse.has_conns) == (
                g.rid, g.max_socks, g.bind_inany, g.has_conns)
            assert reuse.prog == (make_prog(g.prog) if g.prog else None)
            assert reuse.incoming_cpu == self.ref.counter(g)


ReuseportMachine.TestCase.settings = settings(
    max_examples=200, stateful_step_count=50, derandomize=True, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestReuseportMachine = ReuseportMachine.TestCase
