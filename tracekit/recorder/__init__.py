"""Recorder: the real kernel's SO_REUSEPORT decisions (real sockets in a private netns + eBPF observer)."""

from tracekit.recorder.api import ExpectationFailed, Recording, list_scenarios, record, record_scenario

__all__ = ["record", "record_scenario", "list_scenarios", "Recording", "ExpectationFailed"]
