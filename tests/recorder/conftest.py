"""Recorder tests run against this machine's kernel; where it cannot record (no root, network
namespaces or BPF) they skip with the reason the recorder gives."""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # independent_check.py


@functools.cache
def _unsupported() -> str | None:
    from tracekit.recorder.runner import unsupported_reason

    return unsupported_reason()


@pytest.fixture
def kernel_recording() -> None:
    """Skip unless this machine can record (root, network namespaces, BPF)."""
    reason = _unsupported()
    if reason:
        pytest.skip(f"cannot record here: {reason}")
