"""Where the kernel cannot be probed, `tracekit probe` says what is missing and exits 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tracekit.probe.preflight import ProbeUnavailable, _kprobes_enabled, check_probe_support

REPO = Path(__file__).resolve().parents[2]


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "tracekit", "probe", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(_kprobes_enabled(Path("/")), reason="this kernel has kprobes")
def test_a_kernel_without_kprobes_is_refused_with_exit_2_and_no_file(tmp_path):
    done = run("-o", "out.parquet", "--duration", "1", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("tracekit: cannot probe this kernel")
    assert "kprobes: this kernel has no kprobes (CONFIG_KPROBES is off" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_every_missing_piece_is_named(tmp_path):
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/kallsyms").write_text("ffffffff81000000 T reuseport_alloc\n")
    with pytest.raises(ProbeUnavailable) as error:
        check_probe_support(root=tmp_path, bpftrace=str(tmp_path / "no-bpftrace"))
    message = str(error.value)
    assert "bpftrace: not installed" in message
    assert "kernel BTF: /sys/kernel/btf/vmlinux does not exist" in message
    assert "kprobes: this kernel has no kprobes" in message
    (tmp_path / "sys/bus/event_source/devices/kprobe").mkdir(parents=True)
    with pytest.raises(ProbeUnavailable) as error:
        check_probe_support(root=tmp_path, bpftrace=str(tmp_path / "no-bpftrace"))
    assert "reuseport_add_sock, reuseport_detach_sock" in str(error.value)  # absent functions
    assert "reuseport_alloc," not in str(error.value)


def test_usage_errors_exit_2(tmp_path):
    done = run("-o", "out.parquet", "--port", "70000", cwd=tmp_path)
    assert done.returncode == 2 and "--port" in done.stderr
    done = run("--duration", "1", cwd=tmp_path)
    assert done.returncode == 2 and "--output" in done.stderr
