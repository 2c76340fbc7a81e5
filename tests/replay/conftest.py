"""Fixtures for replay tests."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from tracebuilder import TraceBuilder  # noqa: E402


@pytest.fixture
def builder() -> TraceBuilder:
    return TraceBuilder()
