"""Replay a trace through the kernel model and diff expected against observed decisions."""

from tracekit.replay.api import Replay, replay, write_results
from tracekit.replay.decision import DECISION_SCHEMA, Decision

__all__ = ["DECISION_SCHEMA", "Decision", "Replay", "replay", "write_results"]
