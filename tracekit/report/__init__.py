"""Views of a replay: terminal (rich), HTML, JSON summary, JUnit XML.

Every renderer takes a `tracekit.replay.api.Replay` (or a summary dict loaded from ``--json``) and
returns a value; none writes files or prints. The CLI decides where output goes.
"""

from __future__ import annotations

from tracekit.lazy import lazy_names

__all__ = ["RESULT_FORMAT", "render_html", "render_junit", "render_replay", "result_schema", "summary_json"]

# Imported on first use: the terminal report alone does not need the HTML and JUnit renderers.
__getattr__, __dir__ = lazy_names(__name__, {
    "render_html": ("tracekit.report.html", "render_html"),
    **{name: ("tracekit.report.json", name)
       for name in ("RESULT_FORMAT", "result_schema", "summary_json")},
    "render_junit": ("tracekit.report.junit", "render_junit"),
    "render_replay": ("tracekit.report.terminal", "render_replay"),
})
