from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from tracekit.report.svg import Bar, Column, Segment, bar_chart, column_chart

NS = "{http://www.w3.org/2000/svg}"


def test_bar_chart_is_valid_svg_with_proportional_bars():
    bars = [Bar("sk 1", 4, "#111"), Bar("sk 2", 1, "#222", "closed"), Bar("sk 3", 0, "#333")]
    root = ET.fromstring(bar_chart(bars, title="load", width=480))
    widths = [float(rect.get("width")) for rect in root.iter(f"{NS}rect")]
    assert widths[0] > 0 and widths[1] * 4 == widths[0] and widths[2] == 0
    assert int(root.get("height")) == 3 * 20
    assert [t.text for t in root.iter(f"{NS}text")][-3:-1] == ["1 closed", "sk 3"]


def test_bar_chart_of_nothing_is_still_an_svg():
    root = ET.fromstring(bar_chart([], title="empty"))
    assert root.find(f"{NS}title").text == "empty"


def test_column_chart_stacks_segments_to_scale():
    columns = [
        Column("a", (Segment(2, "#0f0", "match"), Segment(2, "#f00", "mismatch"))),
        Column("b", (Segment(1, "#0f0", "match"), Segment(0, "#f00", "mismatch"))),
    ]
    root = ET.fromstring(column_chart(columns, title="over seq", width=100, height=100))
    rects = [(float(r.get("y")), float(r.get("height"))) for r in root.iter(f"{NS}rect")]
    assert rects == [(50, 50), (0, 50), (75, 25)]  # zero-height segments are left out


def test_labels_are_escaped():
    svg = bar_chart([Bar("<&>", 1, "#000")], title='a "b"')
    ET.fromstring(svg)
    assert "<&>" not in svg and re.search(r"&lt;&amp;&gt;", svg)
