"""Shared test helpers: the bundled fixture and small trace builders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# CI machines are shared and noisy: a Hypothesis example that runs slowly is not a failure (speed
# is measured in benchmarks/, never in tests), so no per-example deadline and no too-slow check.
settings.register_profile("tracekit", deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("tracekit")

REPO = Path(__file__).resolve().parents[1]
BASIC_JSONL = REPO / "fixtures" / "handwritten" / "basic.jsonl"


@pytest.fixture
def basic_jsonl() -> Path:
    return BASIC_JSONL


@pytest.fixture
def basic_rows() -> list[dict]:
    return [json.loads(line) for line in BASIC_JSONL.read_text().splitlines() if line.strip()]


@pytest.fixture
def write_jsonl(tmp_path):
    """Write rows to a JSONL file in tmp_path; return its path."""

    def write(rows, name: str = "trace.jsonl") -> Path:
        """Rows are dicts (dumped as JSON), or str or bytes taken as the line itself."""
        path = tmp_path / name
        lines = [row if isinstance(row, bytes) else
                 (row if isinstance(row, str) else json.dumps(row)).encode() for row in rows]
        path.write_bytes(b"".join(line + b"\n" for line in lines))
        return path

    return write


@pytest.fixture
def basic_parquet(tmp_path) -> Path:
    from tracekit.trace import normalize_jsonl

    return normalize_jsonl(BASIC_JSONL, tmp_path / "basic.parquet", kernel="6.18.0-test")


@pytest.fixture
def syn():
    """Build a valid `syn` row; keyword arguments override or add columns."""
    return make_syn


def make_syn(host: str = "h1", seq: int = 1, **columns) -> dict:
    row = {
        "host": host, "seq": seq, "event": "syn", "proto": "tcp", "family": 4,
        "laddr": "10.0.0.1", "lport": 80, "raddr": "10.0.0.2", "rport": 40000,
        "hash": 12345, "cpu": 0,
    }
    row.update(columns)
    return row
