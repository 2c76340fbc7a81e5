"""The socket code around `sock_reuseport.c`: TCP and UDP binding, listening, lookup, accept
queues and listener migration, lowered onto the reuseport functions as the kernel's callers do.

`Host` holds one network namespace; its methods are the socket-layer events of the trace format.
`kernel_calls` replays kernel-layer events (direct calls into `sock_reuseport.c`). `pairing`
pairs each `recv` with the datagram it observes, per socket queue.
"""

from tracekit.kernel.socket_layer.host import Conn, Expectation, Host, Migration, Socket, flow_of
from tracekit.kernel.socket_layer.selection import Pick, migrate_traced, select_traced

__all__ = ["Conn", "Expectation", "Host", "Migration", "Pick", "Socket", "flow_of",
           "migrate_traced", "select_traced"]
