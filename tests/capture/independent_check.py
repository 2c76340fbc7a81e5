"""An independent explanation of a recorded random-walk trace, in plain Python.

Deliberately written without tracekit.kernel, from what the 6.18 kernel was seen to do:
- a TCP group is the listeners' array in kernel order: append on listen, swap-with-last on
  close/shutdown; a SYN goes to socks[(hash * n) >> 32] (when a member set SO_INCOMING_CPU, the
  first socket from there on whose incoming CPU is the selecting CPU, else that slot); at a
  listener's close/shutdown its queue migrates in order (tcp_migrate_req on) or is reset.
- UDP (udp_lib_hash4, 6.13+): connect() detaches the socket from its group (swap-with-last) and it
  then gets exactly its peer's datagrams; a later bind joins the group of the most recently bound
  socket of the port, and if that one is connected (groupless), a new group [it, newcomer] is made.
  Other datagrams go to the group of the most recently bound unconnected socket, skipping
  connected members."""

from collections import defaultdict, deque


def select(members, socks, hash_, cpu):
    members = [sk for sk in members] or [None]
    start = (hash_ * len(members)) >> 32
    order = [members[(start + k) % len(members)] for k in range(len(members))]
    order = [sk for sk in order if sk is not None and "peer" not in socks[sk]]
    if any(socks[sk].get("incoming", -1) >= 0 for sk in members if sk is not None):
        return next((sk for sk in order if socks[sk].get("incoming") == cpu), order[0] if order else None)
    return order[0] if order else None


def leave(group, sk):
    group[group.index(sk)] = group[-1]
    group.pop()


def explain(rows):
    socks, tcp, udp_order, queues = {}, defaultdict(list), defaultdict(list), defaultdict(deque)
    migrate, hashes, expected_recv, expected_reset, problems = 0, {}, defaultdict(deque), set(), []
    for r in sorted(rows, key=lambda r: r["seq"]):
        ev, sk = r["event"], r.get("sk")
        flow = (r.get("laddr"), r.get("lport"), r.get("raddr"), r.get("rport"))
        s = socks.get(sk)
        if ev == "sysctl" and r["name"] == "net.ipv4.tcp_migrate_req":
            migrate = r["value"]
        elif ev == "socket":
            socks[sk] = {"proto": r["proto"]}
        elif ev == "setsockopt" and r["name"] == "SO_INCOMING_CPU" and r["ret"] == 0:
            s["incoming"] = r["value"]
        elif ev == "bind" and r["ret"] == 0:
            s["port"] = r["lport"]
            if s["proto"] == "udp":
                first = udp_order[s["port"]][0] if udp_order[s["port"]] else None
                if first is not None and socks[first].get("group") is None:
                    socks[first]["group"] = [first]
                s["group"] = socks[first]["group"] if first is not None else []
                s["group"].append(sk)
                udp_order[s["port"]].insert(0, sk)
        elif ev == "listen" and r["ret"] == 0:
            tcp[s["port"]].append(sk)
        elif ev == "connect" and r["ret"] == 0:
            s["peer"] = (r["raddr"], r["rport"])
            leave(s.pop("group"), sk)
            s["group"] = None
        elif ev == "close" and s["proto"] == "udp":
            udp_order[s["port"]].remove(sk)
            if s.get("group"):
                leave(s["group"], sk)
            s["closed"] = True
        elif ev in ("close", "shutdown") and sk in tcp[s.get("port")]:
            leave(tcp[s["port"]], sk)
            for queued in queues.pop(sk, ()):
                target = select(tcp[s["port"]], socks, hashes[queued], r["cpu"]) if migrate else None
                (queues[target].append(queued) if target is not None else expected_reset.add(queued))
        elif ev == "syn":
            hashes[flow] = r["hash"]
            target = select(tcp[r["lport"]], socks, r["hash"], r["cpu"])
            (queues[target].append(flow) if target is not None else expected_reset.add(flow))
        elif ev == "datagram":
            peers = [c for c, v in socks.items() if v.get("peer") == flow[2:] and not v.get("closed")]
            first = next((c for c in udp_order[r["lport"]] if "peer" not in socks[c]), None)
            group = socks[first]["group"] if first is not None else []
            if not peers and group and r.get("hash") is None:
                problems.append(f"seq {r['seq']}: datagram {flow} has no hash although group {group} selects")
            elif peers or group:
                expected_recv[flow].append(peers[0] if peers else select(group, socks, r["hash"], r["cpu"]))
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
