"""`tracekit replay` keeps freed memory for the next batch (`tracekit.cli.allocator`): blocks of
a batch's size, allocated and freed again and again, stop faulting pages in."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

CYCLES = """
import resource, sys
import numpy as np
if sys.argv[1] == "tuned":
    from tracekit.cli.allocator import keep_freed_memory
    assert keep_freed_memory()
def cycle():  # what a batch's walk allocates and frees, in size
    parts = [np.ones(n) for n in (70_000, 300_000, 600_000, 150_000)]
    del parts
cycle()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(50):
    cycle()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = subprocess.run([sys.executable, "-c", CYCLES, mode], capture_output=True, text=True,
                         env=env, check=True, timeout=60)
    return int(run.stdout)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_freed_blocks_are_reused_without_page_faults():
    plain = _faults("plain")
    if plain < 500:
        pytest.skip(f"this glibc keeps such blocks anyway ({plain} page faults untuned)")
    assert _faults("tuned") < plain / 10
