"""What can go wrong when a command runs in a guest, as exceptions a caller can act on.

`VMUnavailable` and `KernelNotFound` mean this machine cannot boot the guest at all (the CLI exits
2). The others say how a boot or the guest's command failed; each carries the tail of the guest's
serial console, so a kernel panic or a hung boot names itself.
"""

from __future__ import annotations

from tracekit.errors import TracekitError

__all__ = [
    "VMError",
    "VMUnavailable",
    "KernelNotFound",
    "GuestBootError",
    "GuestTimeout",
    "GuestCommandFailed",
]


class VMError(TracekitError):
    """A guest could not be booted or its command did not succeed."""


class VMUnavailable(VMError):
    """This machine lacks what a guest needs (QEMU)."""


class KernelNotFound(VMError):
    """The KERNEL a caller named is neither an image file nor a release installed under /boot."""


class GuestBootError(VMError):
    """The guest stopped (kernel panic, init failure, power off) before its command finished."""

    def __init__(self, message: str, *, console: str = "") -> None:
        self.console = console
        super().__init__(message)


class GuestTimeout(VMError):
    """The guest's command or its boot took longer than allowed; QEMU was stopped."""

    def __init__(self, message: str, *, console: str = "", stdout: str = "", stderr: str = "") -> None:
        self.console = console
        self.stdout = stdout
        self.stderr = stderr
        super().__init__(message)


class GuestCommandFailed(VMError):
    """The guest's command exited non-zero or did not write an output it was asked for."""

    def __init__(self, message: str, *, result) -> None:
        self.result = result
        super().__init__(message)
