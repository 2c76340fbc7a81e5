"""tracekit's public names: an explicit, sorted __all__ whose members resolve (as in httpx)."""

from __future__ import annotations

import importlib

import pytest

import tracekit

AVAILABLE_NOW = {"normalize", "read_trace", "record", "replay", "simulate", "validate", "write_trace"}


def test_all_is_sorted_and_complete():
    assert tracekit.__all__ == sorted(tracekit.__all__)
    assert AVAILABLE_NOW <= set(tracekit.__all__)
    assert set(tracekit.__all__) <= set(dir(tracekit))


@pytest.mark.parametrize("name", sorted(AVAILABLE_NOW))
def test_member_resolves_to_a_documented_callable(name):
    member = getattr(tracekit, name)
    assert callable(member) and member.__doc__


def test_every_public_name_has_a_lazy_target():
    assert set(tracekit.__all__) == set(tracekit._LAZY)


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError):
        tracekit.no_such_thing  # noqa: B018


def test_trace_package_exports_the_brief_api():
    trace = importlib.import_module("tracekit.trace")
    for name in ("SCHEMA", "TRACE_FORMAT", "write_trace", "iter_batches", "read_metadata",
                 "read_trace", "validate_trace", "normalize_jsonl"):
        assert name in trace.__all__ and hasattr(trace, name)


def test_replay_stays_callable_after_its_package_is_imported(tmp_path):
    """Importing tracekit.replay.<module> rebinds the name `tracekit.replay` to the package."""
    import subprocess
    import sys

    from tracekit.simulator.api import simulate

    trace = simulate("steady", events=500, seed=1, output=tmp_path / "t.parquet")
    code = ("import tracekit.replay.distributed, tracekit; "
            f"r = tracekit.replay({str(trace)!r}); print(r.summary['decisions'], r.exit_code)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    decisions, exit_code = out.stdout.split()
    assert int(decisions) > 0 and exit_code == "0"
