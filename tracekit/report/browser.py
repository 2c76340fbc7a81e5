"""Look at an HTML report in a real browser: headless Chromium driven by Playwright loads the
page, measures what overflows, finds the charts, and takes a screenshot.

Used by the tests (tests/report/test_browser.py) and by ``python reports/generate.py``, which
keeps a screenshot beside each sample report. Needs the ``playwright`` package (in the ``test``
extra) and a Chromium: ``/usr/bin/chromium`` (Debian's ``chromium``) or ``TRACEKIT_CHROMIUM``;
Playwright's own browser download is not used.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["PageCheck", "Chart", "chromium_path", "open_browser", "check_page", "check_pages",
           "FLAGS"]

FLAGS = ("--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync")
"""Headless, no network of its own, nothing that phones home (the profile is a fresh temporary
directory each time)."""

# What the page says about itself, measured by the browser's layout: elements wider than the
# viewport or sticking out of their box, SVG text outside its chart, and each chart's size.
_MEASURE = """
() => {
  const width = document.documentElement.clientWidth;
  const name = (e) => e.tagName.toLowerCase() + (e.getAttribute('class') ? '.' + e.getAttribute('class').split(' ')[0] : '')
      + ' "' + (e.getAttribute('aria-label') || e.textContent || '').trim().slice(0, 60) + '"';
  const overflows = [];
  for (const e of document.querySelectorAll('body *')) {
    const box = e.getBoundingClientRect();
    if (box.width === 0 && box.height === 0) continue;
    if (box.right > width + 1 || box.left < -1) overflows.push('outside the page: ' + name(e));
    const style = getComputedStyle(e);
    if (!(e instanceof SVGElement) && style.overflowX === 'visible' && e.scrollWidth > e.clientWidth + 1
        && e.clientWidth > 0 && style.display !== 'inline')
      overflows.push('wider than its box: ' + name(e));
  }
  const charts = [];
  for (const svg of document.querySelectorAll('svg')) {
    const box = svg.getBoundingClientRect();
    for (const t of svg.querySelectorAll('text')) {
      const b = t.getBoundingClientRect();
      if (b.left < box.left - 1 || b.right > box.right + 1 || b.top < box.top - 1 || b.bottom > box.bottom + 1)
        overflows.push('text outside its chart: ' + name(t) + ' in ' + name(svg));
    }
    charts.push({label: svg.getAttribute('aria-label') || '', cls: svg.getAttribute('class') || '',
                 width: box.width, height: box.height, shapes: svg.querySelectorAll('rect, line, polygon').length});
  }
  return {width: width, scrollWidth: document.documentElement.scrollWidth,
          height: document.documentElement.scrollHeight, overflows: overflows, charts: charts};
}
"""


@dataclass(frozen=True)
class Chart:
    label: str
    cls: str
    width: float
    height: float
    shapes: int


@dataclass(frozen=True)
class PageCheck:
    """What the browser saw of one page at one viewport width."""

    url: str
    width: int
    scroll_width: int
    height: int
    overflows: tuple[str, ...]
    charts: tuple[Chart, ...]
    screenshot: Path | None


def chromium_path() -> str | None:
    """The Chromium to drive: ``TRACEKIT_CHROMIUM``, else ``chromium`` on PATH, else None."""
    explicit = os.environ.get("TRACEKIT_CHROMIUM")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    return shutil.which("chromium") or shutil.which("chromium-browser")


@contextmanager
def open_browser(executable: str | None = None) -> Iterator[Any]:
    """A headless Chromium (a Playwright BrowserContext) with a fresh profile, closed on exit."""
    from playwright.sync_api import sync_playwright

    executable = executable or chromium_path()
    if executable is None:
        raise RuntimeError("no Chromium: install Debian's chromium or set TRACEKIT_CHROMIUM")
    with sync_playwright() as playwright, tempfile.TemporaryDirectory(prefix="tracekit-chromium-") as profile:
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=executable, headless=True, args=list(FLAGS),
            viewport={"width": 1280, "height": 900}, offline=True)
        try:
            yield context
        finally:
            context.close()


SCREENSHOT_HEIGHT = 3000


def check_page(context: Any, page_path: Path, *, width: int = 1280,
               screenshot: Path | None = None) -> PageCheck:
    """Load a local HTML file at a viewport `width`; measure it; optionally save a screenshot
    (PNG) of the page's top `SCREENSHOT_HEIGHT` pixels (all of it when shorter)."""
    page = context.new_page()
    try:
        page.set_viewport_size({"width": width, "height": 900})
        url = Path(page_path).resolve().as_uri()
        page.goto(url, wait_until="load")
        measured = page.evaluate(_MEASURE)
        if screenshot is not None:
            height = min(int(measured["height"]), SCREENSHOT_HEIGHT)
            page.screenshot(path=str(screenshot), full_page=True,
                            clip={"x": 0, "y": 0, "width": width, "height": height})
    finally:
        page.close()
    return PageCheck(
        url=url, width=int(measured["width"]), scroll_width=int(measured["scrollWidth"]),
        height=int(measured["height"]), overflows=tuple(measured["overflows"]),
        charts=tuple(Chart(c["label"], c["cls"], float(c["width"]), float(c["height"]),
                           int(c["shapes"])) for c in measured["charts"]),
        screenshot=screenshot)


def check_pages(paths: Sequence[Path], widths: Sequence[int] = (1280,)) -> list[PageCheck]:
    """Every page at every width, in one browser."""
    with open_browser() as context:
        return [check_page(context, path, width=w) for path in paths for w in widths]
