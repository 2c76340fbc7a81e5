"""The group timeline as an SVG lane chart: one lane per slot of the socket array (and one for the
closed section), seq left to right, a bar per socket for as long as it held that slot.

A move into a hole is a connector in the socket's colour from its old lane to its new one; a
socket that stops listening or leaves is marked at the top (``✕ sk 0``) with a dashed line; the
queued connections of a stopped listener that migrated are an arrow to the socket that took them,
with their count. A group with more than `MAX_STEPS` changes is drawn sampled: the occupant of
each slot at the end of each of `BINS` equal seq ranges, with a strip counting the changes in each
range, so the chart stays the same size however long the trace. Output is a pure function of the
rows, like `tracekit.report.svg`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from tracekit.replay.timeline import apply_change
from tracekit.report.membership import Step

__all__ = ["timeline_chart", "MAX_STEPS", "BINS", "MAX_LANES"]

MAX_STEPS = 120
BINS = 120
MAX_LANES = 32
PALETTE = ("#1565c0", "#2e7d32", "#ef6c00", "#6a1b9a", "#00838f", "#ad1457", "#4e342e",
           "#283593", "#558b2f", "#d84315", "#37474f", "#827717")
CLOSED = -1  # the closed section's lane

_FONT = 'font-family="ui-monospace, SFMono-Regular, Menlo, monospace" font-size="11"'
_LEFT, _RIGHT, _TOP, _LANE, _AXIS = 64, 36, 22, 20, 18


def _n(x: float) -> str:
    text = f"{x:.1f}"
    return text[:-2] if text.endswith(".0") else text


def color_of(sk: int) -> str:
    return PALETTE[sk % len(PALETTE)]


@dataclass(frozen=True)
class _Bar:
    lane: int
    sk: int
    start: int
    stop: int  # exclusive


@dataclass(frozen=True)
class _Link:
    seq: int
    sk: int
    src: int
    dst: int
    count: int  # migrations: connections; moves: 0
    to: int = -1  # migrations: the socket that took them


class _Lanes:
    """Replays steps into bars per lane (exact mode)."""

    def __init__(self) -> None:
        self.open: dict[tuple[int, int], int] = {}  # (lane, sk) -> since
        self.where: dict[int, int] = {}  # sk -> lane now
        self.bars: list[_Bar] = []
        self.moves: list[_Link] = []
        self.migrations: list[_Link] = []
        self.marks: list[tuple[int, str]] = []

    def _start(self, lane: int, sk: int, seq: int) -> None:
        self.open[(lane, sk)] = seq
        self.where[sk] = lane

    def _stop(self, lane: int, sk: int, seq: int) -> None:
        since = self.open.pop((lane, sk), None)
        if since is not None:
            self.bars.append(_Bar(lane, sk, since, seq))
        if self.where.get(sk) == lane:
            del self.where[sk]

    def apply(self, step: Step) -> None:
        """The kernel's order within a close: the stop-listen part (a move into the hole, the
        closing socket to the closed section), then its queued connections migrate, then it
        leaves; the migrations are drawn from where the listener is at that point."""
        seq, pending = step.seq, bool(step.migrations)
        for sk, change, frm, to in step.changes:
            if change == "left" and pending:
                self._migrate(step)
                pending = False
            if change == "joined":
                self._start(to, sk, seq)
            elif change == "moved":
                self._stop(frm, sk, seq)
                self._start(to, sk, seq)
                self.moves.append(_Link(seq, sk, frm, to, 0))
            elif change == "closed":
                self._stop(frm, sk, seq)
                self._start(CLOSED, sk, seq)
                self.marks.append((seq, f"\u2715 sk {sk}"))
            elif change == "reopened":
                self._stop(CLOSED, sk, seq)
                self._start(to, sk, seq)
            elif change == "left":
                if frm is not None:
                    self.marks.append((seq, f"\u2715 sk {sk}"))
                self._stop(CLOSED if frm is None else frm, sk, seq)
        if pending:
            self._migrate(step)

    def _migrate(self, step: Step) -> None:
        counts = Counter((listener, to) for listener, change, to in step.migrations
                         if change == "migrated" and to is not None)
        for (listener, to), n in sorted(counts.items()):
            src, dst = self.where.get(listener, CLOSED), self.where.get(to)
            if dst is not None:
                self.migrations.append(_Link(step.seq, listener, src, dst, n, to))

    def finish(self, end: int) -> None:
        for (lane, sk), _since in list(self.open.items()):
            self._stop(lane, sk, end + 1)
        self.bars.sort(key=lambda b: (b.lane, b.start, b.sk))


def _lanes_of(steps: Sequence[Step]) -> tuple[int, bool]:
    slots, closed = 0, False
    for step in steps:
        for _sk, change, _frm, to in step.changes:
            if to is not None:
                slots = max(slots, to + 1)
            closed |= change == "closed"
    return slots, closed


def timeline_chart(steps: Sequence[Step], *, start: int, end: int, title: str,
                   width: int = 720) -> str:
    """An SVG of one group's membership from seq `start` to seq `end` (inclusive)."""
    slots, has_closed = _lanes_of(steps)
    shown = min(slots, MAX_LANES)
    lanes = list(range(shown)) + ([CLOSED] if has_closed else [])
    row = {lane: i for i, lane in enumerate(lanes)}
    plot = width - _LEFT - _RIGHT
    lo, hi = min(start, steps[0].seq if steps else start), max(end, steps[-1].seq if steps else end)
    span = hi + 1 - lo

    def x(seq: float) -> float:
        return _LEFT + plot * (seq - lo) / span

    def y(lane: int) -> float:
        return _TOP + row[lane] * _LANE

    height = _TOP + len(lanes) * _LANE + _AXIS
    body = [f'<rect x="{_LEFT}" y="{_TOP}" width="{plot}" height="{len(lanes) * _LANE}" '
            f'fill="#fafafa" stroke="#ddd"/>']
    for lane in lanes:
        name = "closed" if lane == CLOSED else f"slot {lane}"
        body.append(f'<text x="{_LEFT - 6}" y="{_n(y(lane) + 14)}" text-anchor="end">{name}</text>')
    sampled = len(steps) > MAX_STEPS
    if sampled:
        body += _sampled(steps, lo, hi, x, y, row)
    else:
        body += _exact(steps, hi, x, y, row)
    body += _axis(lo, hi, x, _TOP + len(lanes) * _LANE)
    note = []
    if sampled:
        note.append(f"sampled: the occupant of each slot at the end of each of {BINS} seq ranges;"
                    f" {len(steps)} changes")
    if shown < slots:
        note.append(f"slots {shown}..{slots - 1} not drawn")
    label = title + (" (" + "; ".join(note) + ")" if note else "")
    head = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(label)}" '
            f'class="timeline" {_FONT}>')
    return "\n".join([head, f"<title>{escape(label)}</title>", *body, "</svg>"])


def _bar(x0: float, x1: float, top: float, sk: int, tip: str) -> list[str]:
    w = max(x1 - x0, 3.0)
    out = [f'<rect x="{_n(x0)}" y="{_n(top + 3)}" width="{_n(w)}" height="{_LANE - 6}" '
           f'fill="{color_of(sk)}" rx="2"><title>{escape(tip)}</title></rect>']
    if w >= 34:
        out.append(f'<text x="{_n(x0 + 4)}" y="{_n(top + 14)}" fill="#fff">sk {sk}</text>')
    return out


def _exact(steps: Sequence[Step], hi: int, x, y, row) -> list[str]:
    lanes = _Lanes()
    for step in steps:
        lanes.apply(step)
    lanes.finish(hi)
    body: list[str] = []
    last_label = -1e9
    for seq, text in lanes.marks:
        body.append(f'<line x1="{_n(x(seq))}" y1="{_TOP - 4}" x2="{_n(x(seq))}" '
                    f'y2="{_n(y(max(row, key=row.get)) + _LANE)}" stroke="#999" '
                    f'stroke-dasharray="3,2"/>')
        if x(seq) - last_label >= 58:
            body.append(f'<text x="{_n(x(seq))}" y="{_TOP - 8}" text-anchor="middle" '
                        f'fill="#c62828">{escape(text)}</text>')
            last_label = x(seq)
    for bar in lanes.bars:
        if bar.lane not in row:
            continue
        where = "the closed section" if bar.lane == CLOSED else f"slot {bar.lane}"
        tip = f"sk {bar.sk} in {where}, seq {bar.start}..{max(bar.stop - 1, bar.start)}"
        body += _bar(x(bar.start), x(bar.stop), y(bar.lane), bar.sk, tip)
    for link in lanes.moves:
        if link.src in row and link.dst in row:
            body.append(f'<line x1="{_n(x(link.seq))}" y1="{_n(y(link.src) + _LANE / 2)}" '
                        f'x2="{_n(x(link.seq))}" y2="{_n(y(link.dst) + _LANE / 2)}" '
                        f'stroke="{color_of(link.sk)}" stroke-width="2">'
                        f'<title>seq {link.seq}: sk {link.sk} moved from slot {link.src} to slot '
                        f'{link.dst}</title></line>')
    for link in lanes.migrations:
        if link.count and link.src in row and link.dst in row:
            body += _arrow(x(link.seq) + 5, y(link.src) + _LANE / 2, y(link.dst) + _LANE / 2,
                           f"seq {link.seq}: {link.count} queued connection"
                           f"{'s' if link.count > 1 else ''} of sk {link.sk} migrated to sk "
                           f"{link.to}", f"\u00d7{link.count}")
    return body


def _arrow(x0: float, y0: float, y1: float, tip: str, label: str) -> list[str]:
    head = -5 if y1 < y0 else 5
    return [
        f'<g class="migration"><title>{escape(tip)}</title>'
        f'<line x1="{_n(x0)}" y1="{_n(y0)}" x2="{_n(x0)}" y2="{_n(y1 - head)}" stroke="#c62828" '
        f'stroke-width="1.5"/>'
        f'<polygon points="{_n(x0 - 3.5)},{_n(y1 - head)} {_n(x0 + 3.5)},{_n(y1 - head)} '
        f'{_n(x0)},{_n(y1)}" fill="#c62828"/>'
        f'<text x="{_n(x0 + 5)}" y="{_n(y0 + 4)}" fill="#c62828">{escape(label)}</text>'
        f'</g>'
    ]


def _sampled(steps: Sequence[Step], lo: int, hi: int, x, y, row) -> list[str]:
    """Occupants at the end of each bin, runs merged; a strip of changes per bin on top."""
    span = hi + 1 - lo
    live: list[int | None] = []
    closed: list[int] = []
    per_bin = [0] * BINS
    occupants: list[dict[int, int]] = []
    i = 0
    for b in range(BINS):
        stop = lo + -(-(b + 1) * span // BINS)  # exclusive
        while i < len(steps) and steps[i].seq < stop:
            step = steps[i]
            per_bin[b] += len(step.changes) + len(step.migrations)
            for sk, change, frm, to in step.changes:
                apply_change(live, closed, sk, change, frm, to)
            i += 1
        now = {slot: sk for slot, sk in enumerate(live) if sk is not None}
        if closed:
            now[CLOSED] = closed[-1]
        occupants.append(now)
    body = []
    peak = max(per_bin) or 1
    for b, n in enumerate(per_bin):
        if n:
            x0, x1 = x(lo + b * span / BINS), x(lo + (b + 1) * span / BINS)
            body.append(f'<rect x="{_n(x0)}" y="4" width="{_n(max(x1 - x0, 1))}" height="10" '
                        f'fill="#c62828" fill-opacity="{_n(0.15 + 0.85 * n / peak)}">'
                        f'<title>{n} changes in seq {lo + -(-b * span // BINS)}..'
                        f'{lo + -(-(b + 1) * span // BINS) - 1}</title></rect>')
    for lane in row:
        run_sk, run_from = None, 0
        for b in range(BINS + 1):
            sk = occupants[b].get(lane) if b < BINS else None
            if sk != run_sk:
                if run_sk is not None:
                    s0, s1 = lo + run_from * span / BINS, lo + b * span / BINS
                    where = "the closed section" if lane == CLOSED else f"slot {lane}"
                    tip = f"sk {run_sk} in {where} (sampled), seq ~{int(s0)}..{int(s1) - 1}"
                    body += _bar(x(s0), x(s1), y(lane), run_sk, tip)
                run_sk, run_from = sk, b
    return body


def _axis(lo: int, hi: int, x, bottom: float) -> list[str]:
    ticks = sorted({lo + (hi - lo) * k // 4 for k in range(5)})
    out = []
    for t in ticks:
        out.append(f'<line x1="{_n(x(t))}" y1="{_n(bottom)}" x2="{_n(x(t))}" y2="{_n(bottom + 4)}" '
                   f'stroke="#999"/>')
        anchor = "start" if t == lo else ("end" if t == hi else "middle")
        out.append(f'<text x="{_n(x(t))}" y="{_n(bottom + 15)}" text-anchor="{anchor}" '
                   f'fill="#666">{"seq " if t == lo else ""}{t}</text>')
    return out


_HEAD, _TAIL = 4, 6


def membership_html(rows: object, *, start: int, end: int, title: str) -> str:
    """A group's timeline for the HTML report: the chart, then its changes one line per seq (a
    long history keeps its first and last lines)."""
    from tracekit.report.membership import describe_step, elide, steps_of

    steps = list(steps_of(rows))
    head, hidden, tail = elide(steps, _HEAD, _TAIL)
    items = [f"<li>{escape(describe_step(step))}</li>" for step in head]
    if hidden:
        items.append(f'<li class="dim">&#8230; {hidden} more changes &#8230;</li>')
    items += [f"<li>{escape(describe_step(step))}</li>" for step in tail]
    return "\n".join([
        f"<h4>Timeline <span class=\"dim\">({len(steps)} change{'s' if len(steps) != 1 else ''}"
        f")</span></h4>",
        timeline_chart(steps, start=start, end=end, title=title),
        '<ol class="timeline">', *items, "</ol>",
    ])
