"""VM tests boot real kernels under QEMU (marker `vm`); they skip, saying why, where QEMU or the
kernel is missing (`.ci/system-packages` installs both on Debian)."""

from __future__ import annotations

import pytest

from tracekit.vmlab import unavailable_reason

# The kernels the matrix covers, by the prefix a user would type.
GUEST_KERNELS = ("6.1", "6.12")


@pytest.fixture
def require_guest():
    """`require_guest("6.1")` returns the KERNEL spec, or skips the test saying what is missing."""

    def require(kernel: str) -> str:
        reason = unavailable_reason(kernel)
        if reason:
            pytest.skip(f"cannot boot a {kernel} guest here: {reason}")
        return kernel

    return require
