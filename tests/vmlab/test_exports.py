"""tracekit.vmlab's public names: a sorted __all__ whose members resolve and are documented."""

from __future__ import annotations

from tracekit import vmlab


def test_all_is_sorted_and_documented() -> None:
    assert vmlab.__all__ == sorted(vmlab.__all__)
    for name in vmlab.__all__:
        assert getattr(vmlab, name).__doc__, name
    assert "run_in_guest" in vmlab.__doc__
