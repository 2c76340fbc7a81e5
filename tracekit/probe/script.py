"""The bpftrace program `tracekit probe` runs: one probe per function of net/core/sock_reuseport.c.

Every probe prints one line that starts with ``TK`` and a record code, then the timestamp
(`nsecs`, CLOCK_MONOTONIC) and the CPU, then the fields of its record (`FIELDS`), all as
unsigned decimal or hexadecimal numbers, so `tracekit.probe.lines` splits a line on spaces and
never has to unescape anything. Kernel addresses (sockets) stay raw: `tracekit.probe.ids` maps
them to small ids.

Functions that return something (`reuseport_alloc`, `_add_sock`, `_select_sock`,
`_migrate_sock`, `_attach_prog`, `_detach_prog`) are read at entry (kprobe: the arguments, kept
per thread) and print at return (kretprobe: the result), so the line carries both. The others
print at entry. What the kernel reads besides the arguments is read where it reads it:
`sysctl_tcp_migrate_req` of the socket's namespace by `reuseport_stop_listen_sock` and
`reuseport_migrate_sock`; the migrating request's `sk_hash`; the payload (after `hdr_len`, the
bytes a program sees) when the group has a program; the joining socket's protocol, family, address,
port and `sk_incoming_cpu` (BTF field paths of `struct sock`).

TCP state changes come from the `sock:inet_sock_set_state` tracepoint, for members of a group
(`@member`, kept by the probes) and for every change into TCP_LISTEN. A UDP socket's
state is set without a tracepoint: `reuseport_has_conns_set()` is followed by
`sk_state = TCP_ESTABLISHED` in `__ip4_datagram_connect()` / `__ip6_datagram_connect()`, and
`__udp_disconnect()` sets TCP_CLOSE; the `C` and `U` records stand for those.
"""

from __future__ import annotations

__all__ = ["FIELDS", "PAYLOAD_WORDS", "PROG_WORDS", "bpftrace_program", "FUNCTIONS"]

PAYLOAD_WORDS = 4
"""Payload bytes kept per selection from a group with a program: this many 8-byte words."""
PROG_WORDS = 64
"""Classic BPF instructions read per attached program (one 8-byte `struct sock_filter` each)."""

FUNCTIONS = (
    "reuseport_alloc", "reuseport_add_sock", "reuseport_detach_sock", "reuseport_stop_listen_sock",
    "reuseport_select_sock", "reuseport_migrate_sock", "reuseport_attach_prog",
    "reuseport_detach_prog", "reuseport_has_conns_set", "reuseport_update_incoming_cpu",
    "__udp_disconnect",
)
"""The kernel functions probed (all of them must exist for the probe to start)."""

# the socket fields every record about a joining socket carries
_SOCK = ("net", "cookie", "proto", "family", "lport", "icpu", "v4", "a0", "a1", "a2", "a3")
# a flow from a packet or a child socket: family, local address (4 words), local port,
# remote address (4 words), remote port
_FLOW = ("ffam", "l0", "l1", "l2", "l3", "lport", "r0", "r1", "r2", "r3", "rport")

FIELDS: dict[str, tuple[str, ...]] = {
    "A": ("sk", "inany", "ret", *_SOCK),                 # reuseport_alloc
    "D": ("sk", "sk2", "inany", "ret", *_SOCK),          # reuseport_add_sock
    "X": ("net", "cookie", "sk"),                                  # reuseport_detach_sock
    "L": ("net", "cookie", "sk", "proto", "migrate_req"),          # reuseport_stop_listen_sock
    "S": ("net", "cookie", "sk", "hash", "ret", "prog", *_FLOW),   # reuseport_select_sock
    "s": ("len", *(f"w{i}" for i in range(PAYLOAD_WORDS))),  # its payload (same ts and cpu)
    "M": ("net", "cookie", "sk", "sk2", "hash", "ret", "migrate_req", *_FLOW),  # reuseport_migrate_sock
    "P": ("net", "cookie", "sk", "ret", "type", "attach", "len", "name"),  # reuseport_attach_prog
    "p": ("index", "insn"),                              # one classic instruction of it
    "Q": ("net", "cookie", "sk", "ret"),                           # reuseport_detach_prog
    "C": ("net", "cookie", "sk"),                                  # reuseport_has_conns_set
    "I": ("net", "cookie", "sk", "val"),                           # reuseport_update_incoming_cpu
    "T": ("net", "cookie", "sk", "old", "new"),                    # sock:inet_sock_set_state
    "U": ("net", "cookie", "sk"),                                  # __udp_disconnect
}
"""The fields of each record after ``TK <code> <ts> <cpu>``; `name` is the last and may be empty."""


def _net(sk: str) -> str:
    return f"{sk}->__sk_common.skc_net.net->ns.inum, {_cookie(sk)}"


def _cookie(sk: str) -> str:
    # never reused, unlike the inode number of a namespace that was freed
    return f"{sk}->__sk_common.skc_net.net->net_cookie"


def _sock_args(sk: str) -> str:
    """printf arguments for `_SOCK` of the `struct sock *` expression `sk`."""
    c = f"{sk}->__sk_common"
    return ", ".join([
        _net(sk), f"{sk}->sk_protocol", f"{c}.skc_family", f"{c}.skc_num",
        f"{c}.skc_incoming_cpu", f"{c}.skc_rcv_saddr",
        *(f"{c}.skc_v6_rcv_saddr.in6_u.u6_addr32[{i}]" for i in range(4)),
    ])


def _format(code: str, extra: int = 0) -> str:
    n = len(FIELDS[code]) - extra
    return f'"TK {code} %llu %u' + " %llu" * n + '\\n"'


_SELECT_FLOW = """\
    $skb = (struct sk_buff *)@sel_skb[tid];
    $ffam = (uint64)0; $l0 = (uint64)0; $l1 = (uint64)0; $l2 = (uint64)0; $l3 = (uint64)0;
    $r0 = (uint64)0; $r1 = (uint64)0; $r2 = (uint64)0; $r3 = (uint64)0;
    $lport = (uint64)0; $rport = (uint64)0;
    if ($skb != 0) {
        $nh = $skb->head + $skb->network_header;
        $th = $skb->head + $skb->transport_header;
        $ffam = *(uint8 *)$nh >> 4;
        if ($ffam == 4) {
            $r0 = *(uint32 *)($nh + 12); $l0 = *(uint32 *)($nh + 16);
        } else {
            $r0 = *(uint32 *)($nh + 8); $r1 = *(uint32 *)($nh + 12);
            $r2 = *(uint32 *)($nh + 16); $r3 = *(uint32 *)($nh + 20);
            $l0 = *(uint32 *)($nh + 24); $l1 = *(uint32 *)($nh + 28);
            $l2 = *(uint32 *)($nh + 32); $l3 = *(uint32 *)($nh + 36);
        }
        $rport = *(uint16 *)$th; $lport = *(uint16 *)($th + 2);
    }
"""

_CHILD_FLOW = """\
    $c = (struct sock *)@mig_child[tid];
    $ffam = (uint64)$c->__sk_common.skc_family;
    $l0 = (uint64)$c->__sk_common.skc_rcv_saddr; $r0 = (uint64)$c->__sk_common.skc_daddr;
    $l1 = (uint64)0; $l2 = (uint64)0; $l3 = (uint64)0; $r1 = (uint64)0; $r2 = (uint64)0; $r3 = (uint64)0;
    if ($ffam == 10) {
        $l0 = $c->__sk_common.skc_v6_rcv_saddr.in6_u.u6_addr32[0];
        $l1 = $c->__sk_common.skc_v6_rcv_saddr.in6_u.u6_addr32[1];
        $l2 = $c->__sk_common.skc_v6_rcv_saddr.in6_u.u6_addr32[2];
        $l3 = $c->__sk_common.skc_v6_rcv_saddr.in6_u.u6_addr32[3];
        $r0 = $c->__sk_common.skc_v6_daddr.in6_u.u6_addr32[0];
        $r1 = $c->__sk_common.skc_v6_daddr.in6_u.u6_addr32[1];
        $r2 = $c->__sk_common.skc_v6_daddr.in6_u.u6_addr32[2];
        $r3 = $c->__sk_common.skc_v6_daddr.in6_u.u6_addr32[3];
    }
    $lport = (uint64)$c->__sk_common.skc_num; $rport = (uint64)$c->__sk_common.skc_dport;
"""

_FLOW_ARGS = "$ffam, $l0, $l1, $l2, $l3, $lport, $r0, $r1, $r2, $r3, $rport"


def bpftrace_program() -> str:
    """The bpftrace source (see the module docstring)."""
    payload_words = ", ".join(f"*(uint64 *)($p + {8 * i})" for i in range(PAYLOAD_WORDS))
    migrate_req = "{sk}->__sk_common.skc_net.net->ipv4.sysctl_tcp_migrate_req"
    return f"""\
BEGIN {{ printf("TK B %llu %u\\n", nsecs, cpu); }}

kprobe:reuseport_alloc {{ @alloc_sk[tid] = arg0; @alloc_inany[tid] = arg1; }}
kretprobe:reuseport_alloc /@alloc_sk[tid]/ {{
    $sk = (struct sock *)@alloc_sk[tid];
    if (retval == 0) {{ @member[(uint64)$sk] = 1; }}
    printf({_format("A")}, nsecs, cpu, $sk, @alloc_inany[tid] & 0xff, retval, {_sock_args("$sk")});
    delete(@alloc_sk[tid]); delete(@alloc_inany[tid]);
}}

kprobe:reuseport_add_sock {{ @add_sk[tid] = arg0; @add_sk2[tid] = arg1; @add_inany[tid] = arg2; }}
kretprobe:reuseport_add_sock /@add_sk[tid]/ {{
    $sk = (struct sock *)@add_sk[tid];
    if (retval == 0) {{ @member[(uint64)$sk] = 1; }}
    printf({_format("D")}, nsecs, cpu, $sk, @add_sk2[tid], @add_inany[tid] & 0xff, retval,
           {_sock_args("$sk")});
    delete(@add_sk[tid]); delete(@add_sk2[tid]); delete(@add_inany[tid]);
}}

kprobe:reuseport_detach_sock {{
    $sk = (struct sock *)arg0;
    delete(@member[(uint64)$sk]);
    printf({_format("X")}, nsecs, cpu, {_net("$sk")}, $sk);
}}

kprobe:reuseport_stop_listen_sock {{
    $sk = (struct sock *)arg0;
    printf({_format("L")}, nsecs, cpu, {_net("$sk")}, $sk, $sk->sk_protocol,
           {migrate_req.format(sk="$sk")});
}}

kprobe:reuseport_select_sock {{
    @sel_sk[tid] = arg0; @sel_hash[tid] = arg1; @sel_skb[tid] = arg2; @sel_hdr[tid] = arg3;
}}
kretprobe:reuseport_select_sock /@sel_sk[tid]/ {{
    $ts = nsecs;
    $sk = (struct sock *)@sel_sk[tid];
    $prog = (uint64)0;
    $reuse = $sk->sk_reuseport_cb;
    if ($reuse != 0) {{ $prog = (uint64)$reuse->prog; }}
{_SELECT_FLOW}
    printf({_format("S")}, $ts, cpu, {_net("$sk")}, $sk, @sel_hash[tid] & 0xffffffff, retval,
           $prog, {_FLOW_ARGS});
    if ($prog != 0 && $skb != 0) {{
        $p = $skb->data + @sel_hdr[tid];
        printf({_format("s")}, $ts, cpu, $skb->len - @sel_hdr[tid], {payload_words});
    }}
    delete(@sel_sk[tid]); delete(@sel_hash[tid]); delete(@sel_skb[tid]); delete(@sel_hdr[tid]);
}}

kprobe:reuseport_migrate_sock {{
    $c = (struct sock *)arg1;
    @mig_sk[tid] = arg0; @mig_child[tid] = arg1; @mig_hash[tid] = $c->__sk_common.skc_hash;
}}
kretprobe:reuseport_migrate_sock /@mig_sk[tid]/ {{
    $sk = (struct sock *)@mig_sk[tid];
{_CHILD_FLOW}
    printf({_format("M")}, nsecs, cpu, {_net("$sk")}, $sk, $c, @mig_hash[tid], retval,
           {migrate_req.format(sk="$sk")}, {_FLOW_ARGS});
    delete(@mig_sk[tid]); delete(@mig_child[tid]); delete(@mig_hash[tid]);
}}

kprobe:reuseport_attach_prog {{ @ap_sk[tid] = arg0; @ap_prog[tid] = arg1; }}
kretprobe:reuseport_attach_prog /@ap_sk[tid]/ {{
    $ts = nsecs;
    $sk = (struct sock *)@ap_sk[tid];
    $p = (struct bpf_prog *)@ap_prog[tid];
    $len = (uint64)0;
    $orig = (uint64)$p->orig_prog;  /* struct sock_fprog_kern {{ u16 len; struct sock_filter *filter; }} */
    if ($orig != 0) {{ $len = *(uint16 *)$orig; }}
    printf("TK P %llu %u %llu %llu %llu %llu %llu %llu %llu %s\\n", $ts, cpu, {_net("$sk")}, $sk,
           retval, $p->type, $p->expected_attach_type, $len, $p->aux->name);
    if ($len > 0) {{
        $f = *(uint64 *)($orig + 8);
        $i = (uint64)0;
        unroll({PROG_WORDS}) {{
            if ($i < $len) {{
                printf({_format("p")}, $ts, cpu, $i, *(uint64 *)($f + 8 * $i));
            }}
            $i = $i + 1;
        }}
    }}
    delete(@ap_sk[tid]); delete(@ap_prog[tid]);
}}

kprobe:reuseport_detach_prog {{ @dp_sk[tid] = arg0; }}
kretprobe:reuseport_detach_prog /@dp_sk[tid]/ {{
    $sk = (struct sock *)@dp_sk[tid];
    printf({_format("Q")}, nsecs, cpu, {_net("$sk")}, $sk, retval);
    delete(@dp_sk[tid]);
}}

kprobe:reuseport_has_conns_set {{
    $sk = (struct sock *)arg0;
    printf({_format("C")}, nsecs, cpu, {_net("$sk")}, $sk);
}}

kprobe:reuseport_update_incoming_cpu {{
    $sk = (struct sock *)arg0;
    printf({_format("I")}, nsecs, cpu, {_net("$sk")}, $sk, arg1 & 0xffffffff);
}}

kprobe:__udp_disconnect /@member[arg0]/ {{
    $sk = (struct sock *)arg0;
    printf({_format("U")}, nsecs, cpu, {_net("$sk")}, $sk);
}}

tracepoint:sock:inet_sock_set_state
/args->protocol == 6 && (@member[(uint64)args->skaddr] || args->newstate == 10)/ {{
    $sk = (struct sock *)args->skaddr;
    printf({_format("T")}, nsecs, cpu, {_net("$sk")}, $sk, args->oldstate, args->newstate);
}}

END {{
    clear(@alloc_sk); clear(@alloc_inany); clear(@add_sk); clear(@add_sk2); clear(@add_inany);
    clear(@sel_sk); clear(@sel_hash); clear(@sel_skb); clear(@sel_hdr); clear(@mig_sk);
    clear(@mig_child); clear(@mig_hash); clear(@ap_sk); clear(@ap_prog); clear(@dp_sk);
    clear(@member);
}}
"""
