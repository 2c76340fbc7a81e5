"""The CLI and the package import cheaply: no pandas or pyarrow until a command needs them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _run(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)


def test_importing_the_cli_imports_no_pandas_or_pyarrow():
    run = _run("import sys, tracekit, tracekit.cli; "
               "print(sorted(m for m in ('pandas', 'pyarrow', 'numpy') if m in sys.modules))")
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"


def test_help_lists_the_commands_without_heavy_imports():
    run = _run("import sys; from tracekit.cli import main\n"
               "try:\n    main(['--help'], prog_name='tracekit')\n"
               "except SystemExit as e:\n    assert e.code == 0\n"
               "print('pyarrow' in sys.modules, 'pandas' in sys.modules)")
    assert run.returncode == 0, run.stderr
    assert "normalize" in run.stdout and "validate" in run.stdout
    assert run.stdout.strip().endswith("False False")
