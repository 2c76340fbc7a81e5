"""How a guest's files turn into a result or an error (the files a guest init writes, without QEMU)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tracekit.vmlab import GuestBootError, GuestCommandFailed, GuestTimeout
from tracekit.vmlab.handback import collect


def _collect(tmp_path: Path, *, files: dict[str, str], console: str = "", timed_out: bool = False,
             outputs=(), check: bool = True):
    control, work = tmp_path / "control", tmp_path / "work"
    control.mkdir(exist_ok=True)
    work.mkdir(exist_ok=True)
    for name, text in files.items():
        (control / name).write_text(text)
    (tmp_path / "console.log").write_text(console)
    return collect(control=control, workdir=work, console_log=tmp_path / "console.log", outputs=outputs,
                   timed_out=timed_out, timeout=60, seconds=75, kernel_name="6.1", check=check)


def test_success_hands_back_status_output_and_files(tmp_path: Path) -> None:
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "t.parquet").write_bytes(b"PAR1")
    result = _collect(tmp_path, files={"booted": "6.1.0-57-amd64\n", "status": "0\n", "stdout": "hi\n"},
                      outputs=["t.parquet"])
    assert (result.kernel, result.returncode, result.stdout, result.files) == (
        "6.1.0-57-amd64", 0, "hi\n", {"t.parquet": b"PAR1"})


def test_kernel_panic_is_named(tmp_path: Path) -> None:
    console = "[ 1.0] VFS: Cannot open root device\n[ 1.1] Kernel panic - not syncing: VFS: Unable to mount root fs\n"
    with pytest.raises(GuestBootError, match="Kernel panic - not syncing: VFS: Unable to mount root fs"):
        _collect(tmp_path, files={}, console=console)


def test_host_timeout_says_which_stage_hung(tmp_path: Path) -> None:
    with pytest.raises(GuestTimeout, match="its boot did not finish"):
        _collect(tmp_path, files={}, timed_out=True)
    with pytest.raises(GuestTimeout, match="its command did not finish"):
        _collect(tmp_path, files={"booted": "6.1.0-57-amd64"}, timed_out=True)


def test_command_timeout_failure_and_missing_output(tmp_path: Path) -> None:
    with pytest.raises(GuestTimeout, match="ran longer than 60 s"):
        _collect(tmp_path, files={"booted": "r", "status": "124"})
    with pytest.raises(GuestCommandFailed, match="exited with status 3; stderr tail:\n    boom") as failed:
        _collect(tmp_path, files={"booted": "r", "status": "3", "stderr": "boom\n"})
    assert failed.value.result.returncode == 3
    assert _collect(tmp_path, files={"booted": "r", "status": "3"}, check=False).returncode == 3
    with pytest.raises(GuestCommandFailed, match="did not write t.parquet"):
        _collect(tmp_path, files={"booted": "r", "status": "0"}, outputs=["t.parquet"])
