"""Small hand-written SVG charts for the HTML report: horizontal bars and stacked columns.

Output is a pure function of the input (coordinates rounded to one decimal), so a report is
byte-identical across runs and machines.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

__all__ = ["Bar", "Column", "Segment", "bar_chart", "column_chart"]

_FONT = 'font-family="ui-monospace, SFMono-Regular, Menlo, monospace" font-size="12"'
_ROW = 20
_LABEL_WIDTH = 120
_VALUE_WIDTH = 60


@dataclass(frozen=True)
class Bar:
    label: str
    value: int
    color: str
    note: str = ""  # shown after the value, e.g. "closed"


@dataclass(frozen=True)
class Segment:
    value: int
    color: str
    name: str


@dataclass(frozen=True)
class Column:
    label: str  # tooltip, e.g. "seq 100-199"
    segments: tuple[Segment, ...]


def _n(x: float) -> str:
    text = f"{x:.1f}"
    return text[:-2] if text.endswith(".0") else text


def _svg(width: int, height: int, title: str, body: list[str]) -> str:
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}" {_FONT}>'
    )
    return "\n".join([head, f"<title>{escape(title)}</title>", *body, "</svg>"])


def bar_chart(bars: Sequence[Bar], *, title: str, width: int = 480) -> str:
    """One horizontal bar a row, labelled on the left, value on the right, scaled to the largest."""
    values = [f"{bar.value}" + (f" {bar.note}" if bar.note else "") for bar in bars]
    # room for the longest value text after the longest bar (monospace, ~7.3 px a character)
    value_width = max(_VALUE_WIDTH, 8 + int(7.3 * max(map(len, values), default=0)))
    plot = width - _LABEL_WIDTH - value_width
    peak = max((bar.value for bar in bars), default=0) or 1
    body = []
    for row, bar in enumerate(bars):
        y = row * _ROW
        length = plot * bar.value / peak
        value = f"{bar.value}" + (f" {bar.note}" if bar.note else "")
        body += [
            f'<text x="{_LABEL_WIDTH - 6}" y="{y + 14}" text-anchor="end">{escape(bar.label)}</text>',
            f'<rect x="{_LABEL_WIDTH}" y="{y + 3}" width="{_n(length)}" height="{_ROW - 6}" '
            f'fill="{escape(bar.color)}"><title>{escape(bar.label)}: {escape(value)}</title></rect>',
            f'<text x="{_n(_LABEL_WIDTH + length + 4)}" y="{y + 14}">{escape(value)}</text>',
        ]
    return _svg(width, max(len(bars), 1) * _ROW, title, body)


def column_chart(columns: Sequence[Column], *, title: str, width: int = 640, height: int = 120) -> str:
    """Stacked columns left to right (e.g. decisions per verdict over seq), scaled to the tallest."""
    peak = max((sum(s.value for s in column.segments) for column in columns), default=0) or 1
    step = width / max(len(columns), 1)
    body = [f'<line x1="0" y1="{height}" x2="{width}" y2="{height}" stroke="#999"/>']
    for index, column in enumerate(columns):
        top = float(height)
        for segment in column.segments:
            if not segment.value:
                continue
            size = height * segment.value / peak
            top -= size
            tip = f"{column.label}: {segment.value} {segment.name}"
            body.append(
                f'<rect x="{_n(index * step + 1)}" y="{_n(top)}" width="{_n(max(step - 2, 1))}" '
                f'height="{_n(size)}" fill="{escape(segment.color)}"><title>{escape(tip)}</title></rect>'
            )
    return _svg(width, height + 1, title, body)
