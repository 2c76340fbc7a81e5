"""The HTML reports in a real browser: headless Chromium (Playwright) loads each sample report and
a freshly rendered one, at a desktop and a narrow width; nothing sticks out of the page or of its
box, SVG text stays inside its chart, and the charts are there with something drawn in them."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("playwright", reason="pip install '.[test]' installs Playwright, which drives "
                    "Chromium for the browser check")

from tracekit.report.browser import check_page, chromium_path, open_browser  # noqa: E402

if chromium_path() is None:
    pytest.skip("no Chromium: apt-get install chromium (.ci/system-packages), or set "
                "TRACEKIT_CHROMIUM", allow_module_level=True)

import tracekit  # noqa: E402
from tracekit.report import render_html  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SAMPLES = sorted((REPO / "reports").glob("*/report.html"))
WIDTHS = (1280, 800)


@pytest.fixture(scope="module")
def browser():
    with open_browser() as context:
        yield context


def _assert_clean(check):
    assert not check.overflows, "\n".join(check.overflows)
    assert check.scroll_width <= check.width, "the page scrolls sideways"
    assert check.charts, "no chart on the page"
    for chart in check.charts:
        assert chart.width > 100 and chart.height > 10 and chart.shapes > 0, chart


def test_there_are_sample_reports():
    assert len(SAMPLES) >= 9


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("report", SAMPLES, ids=[p.parent.name for p in SAMPLES])
def test_sample_report_renders(browser, report, width, tmp_path):
    check = check_page(browser, report, width=width, screenshot=tmp_path / "shot.png")
    _assert_clean(check)
    labels = [chart.label for chart in check.charts]
    assert "decisions per verdict" in labels
    assert any(label.startswith("load per socket in ") for label in labels)
    assert any(chart.cls == "timeline" for chart in check.charts), "no group timeline"
    assert (tmp_path / "shot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert report.with_name("report.png").is_file(), "run python reports/generate.py"


def test_rolling_restart_timeline_in_the_browser(browser, tmp_path):
    """The timeline of a fresh replay of the recorded rolling restart: its lanes, closes and
    migrations are drawn inside the chart."""
    page = tmp_path / "rolling.html"
    replay = tracekit.replay(REPO / "fixtures" / "recorded" / "story-rolling-restart-migrate.parquet")
    page.write_text(render_html(replay))
    check = check_page(browser, page, width=1280, screenshot=tmp_path / "rolling.png")
    _assert_clean(check)
    timeline = [chart for chart in check.charts if chart.cls == "timeline"]
    assert len(timeline) == 1
    # background, 7 slot stretches + 3 closed-section marks, 3 moves, 3 close lines,
    # 3 migration arrows (line + head), 5 axis ticks
    assert timeline[0].shapes >= 1 + 10 + 3 + 3 + 6 + 5
