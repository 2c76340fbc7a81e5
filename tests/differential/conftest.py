"""Differential tests record on this machine's kernel; where it cannot record (no root, network
namespaces or BPF) they skip with the reason the recorder gives."""

from __future__ import annotations

import functools

import pytest


@functools.cache
def _unsupported() -> str | None:
    from tracekit.recorder.runner import unsupported_reason

    return unsupported_reason()


@pytest.fixture(autouse=True)
def kernel_recording(request) -> None:
    if request.node.get_closest_marker("vm"):
        return  # records in a guest: tests/differential/test_vm_differential.py checks QEMU itself
    reason = _unsupported()
    if reason:
        pytest.skip(f"cannot record here: {reason}")
