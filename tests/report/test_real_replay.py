"""The renderers over real replays of the recorded kernel traces (not hand-made summaries)."""

from __future__ import annotations

import io
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from rich.console import Console

from tracekit.replay.api import replay
from tracekit.report import render_html, render_junit, render_replay, result_schema, summary_json
from tracekit.report.view import format_sk

RECORDED = sorted((Path(__file__).resolve().parents[2] / "fixtures" / "recorded").glob("*.parquet"))


@pytest.fixture(scope="module", params=RECORDED, ids=[p.stem for p in RECORDED])
def real(request):
    return replay(request.param, results=True)


def test_summary_follows_the_schema(real):
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(json.loads(summary_json(real.summary)), result_schema())


def test_terminal_report_shows_every_group_in_array_order(real):
    console = Console(width=120, file=io.StringIO(), color_system=None)
    console.print(real)  # Replay.__rich__ is this module's render_replay
    out = console.file.getvalue()
    assert out == _render(render_replay(real))
    for group in real.summary["groups"]:
        assert f"{group['host']} · {group['group']}" in out
        for slot, sk in enumerate(group["socks"]):
            assert f"[{slot}] {format_sk(sk)} " in out


def test_html_and_junit_render(real):
    page = real._repr_html_()
    assert page == render_html(real) and page.count("<svg") >= 1 + len(real.summary["groups"])
    root = ET.fromstring(render_junit(real))
    assert int(root.get("tests")) == len(real.summary["groups"])
    assert int(root.get("failures")) == sum(g["mismatched"] > 0 for g in real.summary["groups"])


def _render(renderable) -> str:
    console = Console(width=120, file=io.StringIO(), color_system=None)
    console.print(renderable)
    return console.file.getvalue()
