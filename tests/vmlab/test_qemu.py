"""The QEMU command line, and a clear error where QEMU is missing."""

from __future__ import annotations

from pathlib import Path

import pytest

from tracekit import vmlab
from tracekit.vmlab import GuestKernel, VMUnavailable
from tracekit.vmlab.qemu import qemu_command


def test_missing_qemu_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(VMUnavailable, match="qemu-system-x86_64 is not installed"):
        vmlab.run_in_guest("6.1", ["true"])
    assert "qemu-system-x86_64 is not installed" in vmlab.unavailable_reason("6.1")


def test_root_is_shared_read_only_and_paths_are_escaped() -> None:
    kernel = GuestKernel(Path("/boot/vmlinuz-x"), None, "x")
    argv = qemu_command(kernel, init=Path("/c/init"), control=Path("/c"), workdir=Path("/w,1"),
                        console=Path("/c.log"), cpus=2, memory_mb=512, qemu="qemu")
    shares = [argv[i + 1] for i, word in enumerate(argv) if word == "-virtfs"]
    assert shares[0].startswith("local,path=/,mount_tag=") and shares[0].endswith(",readonly=on")
    assert shares[2].startswith("local,path=/w,,1,") and "readonly" not in shares[2]
    assert "-initrd" not in argv and argv[argv.index("-accel") + 1] == "tcg"
    assert "init=/c/init" in argv[argv.index("-append") + 1]
