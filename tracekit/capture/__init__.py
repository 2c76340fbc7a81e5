"""Capture: record the real kernel's SO_REUSEPORT decisions (private netns + eBPF observer)."""

from tracekit.capture.api import ExpectationFailed, Recording, list_scenarios, record, record_scenario

__all__ = ["record", "record_scenario", "list_scenarios", "Recording", "ExpectationFailed"]
