"""`tracekit probe`: capture what the running kernel's net/core/sock_reuseport.c decides.

bpftrace attaches kprobes (and kretprobes, for the return values) to the functions of
sock_reuseport.c and a tracepoint for TCP state changes; `tracekit.probe.run` turns its output
into kernel-layer rows of the trace format (`tracekit.probe.translate`) and streams them into a
Parquet trace (`tracekit.source=probe`, `tracekit.kernel=uname -r`), which `tracekit replay`
replays like a simulated one::

    import tracekit
    stats = tracekit.probe("t.parquet", duration=60)    # as root, on a kernel with kprobes
    stats.rows, stats.lost

`check_probe_support()` raises `ProbeUnavailable` naming what this machine lacks (root,
bpftrace, kernel BTF, kprobes, the functions). Like `tracekit.replay`, the package is callable:
importing a submodule binds `tracekit.probe` to the package, which forwards to `probe()`.
"""

import sys
import types

from tracekit.probe.preflight import ProbeUnavailable, check_probe_support
from tracekit.probe.run import ProbeStats, probe

__all__ = ["ProbeStats", "ProbeUnavailable", "check_probe_support", "probe"]


class _CallablePackage(types.ModuleType):
    def __call__(self, *args, **kwargs) -> ProbeStats:
        return probe(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
