"""An independent explanation of a recorded random-walk trace, in plain Python.

Deliberately written without tracekit.kernel, from what the 6.18 kernel was seen to do. Each
group of the walk has a port of its own, so groups are keyed by (protocol, port):
- a TCP group is the listeners' array in kernel order: append on listen, swap-with-last on
  close/shutdown (SHUT_WR leaves a listener alone); a SYN goes to socks[(hash * n) >> 32] (when
  the group counts a member with an incoming CPU, the first socket from there on whose incoming
  CPU is the selecting CPU, else that slot); at a listener's close/shutdown its queue migrates
  in order (tcp_migrate_req on) or is reset. Migration picks the same way by the connection's
  own hash: the SYN's `sk_hash` where the group is bound to a wildcard address (its SYN hash
  was taken over INADDR_ANY / in6addr_any), else the SYN's hash.
- a classic BPF program on the group picks socks[result] when result < n; otherwise the hash
  decides.
- UDP (udp_lib_hash4, 6.13+): connect() detaches the socket from its group (swap-with-last) and it
  then gets exactly its peer's datagrams; a wildcard-bound socket moves to the source address.
  A later bind joins the group of the first socket of the same address in the port's primary
  slot, the most recently bound for IPv4 and the least recently bound for IPv6 (IPv6 reuseport
  sockets are added at the tail); if that one is connected (groupless), a new group
  [it, newcomer] is made. Other datagrams go to the
  lookup: the port's sockets are scored in bucket order (IPv4: newest first; IPv6: oldest
  first), one point more for a socket whose incoming CPU is the receiving CPU; the first socket
  scoring above the best so far runs its group's selection, which is final unless a member of
  that group ever connected: then its pick's score becomes the best and the walk goes on.
- a group counts members with an incoming CPU as they join and leave it; a connected UDP socket
  takes the CPU of each datagram it receives as its incoming CPU, uncounted."""

import struct
from collections import defaultdict, deque

SHUT_WR = 1
AD_CPU = (-0x1000 + 36) & 0xFFFFFFFF


def select(members, socks, hash_, cpu, counted):
    members = [sk for sk in members] or [None]
    start = (hash_ * len(members)) >> 32
    order = [members[(start + k) % len(members)] for k in range(len(members))]
    order = [sk for sk in order if sk is not None and "peer" not in socks[sk]]
    if counted:
        return next((sk for sk in order if socks[sk].get("incoming", -1) == cpu), order[0] if order else None)
    return order[0] if order else None


def run_cbpf(prog, payload, cpu):
    """The few classic BPF instructions the random walk attaches (loads past the payload: 0)."""
    a, pc = 0, 0
    insns = [struct.unpack("=HBBI", prog[i : i + 8]) for i in range(0, len(prog), 8)]
    while True:
        code, jt, jf, k = insns[pc]
        pc += 1
        if code in (0x20, 0x28, 0x30):  # ld w/h/b [k]
            size = {0x20: 4, 0x28: 2, 0x30: 1}[code]
            if code == 0x20 and k == AD_CPU:
                a = cpu
            elif k + size > len(payload):
                return 0
            else:
                a = int.from_bytes(payload[k : k + size], "big")
        elif code == 0x94:
            a %= k
        elif code == 0x54:
            a &= k
        elif code == 0x74:
            a >>= k
        elif code in (0x15, 0x25):  # jeq / jgt #k
            pc += jt if (a == k if code == 0x15 else a > k) else jf
        elif code == 0x16:
            return a
        elif code == 0x06:
            return k
        else:
            raise ValueError(f"instruction {code:#x} is not one the random walk uses")


class Group(list):
    """A group's live members in array order, and how many of them count an incoming CPU."""

    counted = 0
    has_conns = False

    def join(self, sk, socks):
        self.append(sk)
        self.counted += socks[sk].get("incoming", -1) >= 0

    def leave(self, sk, socks):
        self[self.index(sk)] = self[-1]
        self.pop()
        self.counted -= socks[sk].get("incoming", -1) >= 0


def explain(rows):
    socks, tcp, udp_order, queues, progs = {}, defaultdict(Group), defaultdict(list), defaultdict(deque), {}
    migrate, hashes, expected_recv, expected_reset, problems = 0, {}, defaultdict(deque), set(), []

    def pick(group, key, r, payload):
        prog = progs.get(key)
        if prog is not None and group:
            index = run_cbpf(prog, payload, r["cpu"])
            if index < len(group):
                return group[index]
            if len(group) == 1:
                return group[0]
        return select(group, socks, r["hash"], r["cpu"], group.counted if group else 0)

    def udp_lookup(candidates, key, r):
        score = lambda c: 1 + (socks[c].get("incoming", -1) == r["cpu"])  # noqa: E731
        result, best = None, 0
        for c in candidates:
            if score(c) > best:
                group = socks[c]["group"]
                result = pick(group, key, r, r.get("payload") or b"")
                if not group.has_conns:
                    return result
                best = max(best, score(c), score(result))
        return result

    for r in sorted(rows, key=lambda r: r["seq"]):
        ev, sk = r["event"], r.get("sk")
        flow = (r.get("laddr"), r.get("lport"), r.get("raddr"), r.get("rport"))
        s = socks.get(sk)
        if ev == "sysctl" and r["name"] == "net.ipv4.tcp_migrate_req":
            migrate = r["value"]
        elif ev == "socket":
            socks[sk] = {"proto": r["proto"]}
        elif ev == "setsockopt" and r["name"] == "SO_INCOMING_CPU" and r["ret"] == 0:
            group = s.get("group") if s["proto"] == "udp" else (tcp[s["port"]] if sk in tcp[s.get("port")] else None)
            if group is not None:
                group.counted += (r["value"] >= 0) - (s.get("incoming", -1) >= 0)
            s["incoming"] = r["value"]
        elif ev == "setsockopt" and r["name"] == "SO_ATTACH_REUSEPORT_CBPF" and r["ret"] == 0:
            s["prog"] = r["prog"]
            if "port" in s:
                progs[(s["proto"], s["port"])] = r["prog"]
        elif ev == "bind" and r["ret"] == 0:
            s["port"], s["addr"] = r["lport"], r["laddr"]
            if "prog" in s:
                progs[(s["proto"], s["port"])] = s["prog"]
            if s["proto"] == "udp":
                same = [c for c in udp_order[s["port"]] if socks[c]["addr"] == s["addr"]]
                if ":" in s["addr"]:
                    same.reverse()
                first = same[0] if same else None
                if first is not None and socks[first].get("group") is None:
                    socks[first]["group"] = Group()
                    socks[first]["group"].join(first, socks)
                s["group"] = socks[first]["group"] if first is not None else Group()
                s["group"].join(sk, socks)
                udp_order[s["port"]].insert(0, sk)
        elif ev == "listen" and r["ret"] == 0:
            tcp[s["port"]].join(sk, socks)
        elif ev == "connect" and r["ret"] == 0:
            s["peer"] = (r["raddr"], r["rport"])
            s["group"].has_conns = True
            s.pop("group").leave(sk, socks)
            s["group"] = None
            if s["addr"] in ("0.0.0.0", "::"):
                s["addr"] = "rehashed"
        elif ev == "close" and s["proto"] == "udp":
            udp_order[s["port"]].remove(sk)
            if s.get("group"):
                s["group"].leave(sk, socks)
            s["closed"] = True
        elif ev in ("close", "shutdown") and sk in tcp[s.get("port")] and r.get("value") != SHUT_WR:
            tcp[s["port"]].leave(sk, socks)
            for queued in queues.pop(sk, ()):
                target = select(tcp[s["port"]], socks, hashes[queued], r["cpu"], tcp[s["port"]].counted) if migrate else None
                (queues[target].append(queued) if target is not None else expected_reset.add(queued))
        elif ev == "syn":
            hashes[flow] = r.get("sk_hash", r.get("hash"))
            target = pick(tcp[r["lport"]], ("tcp", r["lport"]), r, b"") if tcp[r["lport"]] else None
            (queues[target].append(flow) if target is not None else expected_reset.add(flow))
        elif ev == "datagram":
            peers = [c for c, v in socks.items() if v.get("peer") == flow[2:] and not v.get("closed") and v.get("port") == flow[1]]
            unconnected = [c for c in udp_order[r["lport"]] if "peer" not in socks[c]]
            key = ("udp", r["lport"])
            if not peers and unconnected and r.get("hash") is None and key not in progs:
                problems.append(f"seq {r['seq']}: datagram {flow} has no hash although sk {unconnected[0]}'s group selects")
            elif peers:
                expected_recv[flow].append(peers[0])
                socks[peers[0]]["incoming"] = r["cpu"]
            elif unconnected:
                if ":" in socks[unconnected[0]]["addr"]:
                    unconnected.reverse()
                expected_recv[flow].append(udp_lookup(unconnected, key, r))
        elif ev == "accept":
            want = queues[sk].popleft() if queues[sk] else None
            if want != flow:
                problems.append(f"seq {r['seq']}: sk {sk} accepted {flow}, its queue head is {want}")
        elif ev == "recv":
            want = expected_recv[flow].popleft() if expected_recv[flow] else None
            if want != sk:
                problems.append(f"seq {r['seq']}: {flow} received by sk {sk}, expected sk {want}")
        elif ev == "reset" and flow not in expected_reset:
            problems.append(f"seq {r['seq']}: {flow} was reset unexpectedly")
    return problems
