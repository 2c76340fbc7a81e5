"""The C allocator tuned for a long replay: memory freed by one batch is kept for the next.

A replay allocates and frees NumPy and Arrow buffers of a few hundred kB to a few MB for every
batch. glibc's malloc serves blocks that large with `mmap` and unmaps them, or trims the heap,
when they are freed, so every batch faults its memory in again: on the 20M-event socket-layer
benchmark trace about 380,000 page faults and 1.3 to 1.6 s of system time, against 145,000 and
0.7 s with blocks up to 32 MiB taken from the heap and up to 256 MiB of free heap kept. Only
glibc has `mallopt`; elsewhere nothing changes.
"""

from __future__ import annotations

import ctypes

__all__ = ["keep_freed_memory"]

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # glibc's largest (DEFAULT_MMAP_THRESHOLD_MAX on 64-bit)
TRIM_THRESHOLD = 256 << 20


def keep_freed_memory() -> bool:
    """Set glibc's thresholds for this process; whether the allocator took them."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
