"""Views of a replay: terminal (rich), HTML, JSON summary, JUnit XML.

Every renderer takes a `tracekit.replay.api.Replay` (or a summary dict loaded from ``--json``) and
returns a value; none writes files or prints. The CLI decides where output goes.
"""

from __future__ import annotations

from tracekit.report.html import render_html
from tracekit.report.json import RESULT_FORMAT, result_schema, summary_json
from tracekit.report.junit import render_junit
from tracekit.report.terminal import render_replay

__all__ = ["RESULT_FORMAT", "render_html", "render_junit", "render_replay", "result_schema", "summary_json"]
