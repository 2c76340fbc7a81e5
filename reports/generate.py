"""Regenerate the sample reports in reports/ from the recorded fixtures.

    python reports/generate.py            # from the repository root

For every trace in fixtures/recorded/ (a ``*.parquet`` file or a ``host=`` directory) this runs
``tracekit replay`` and keeps what it writes in ``reports/<trace name>/``: ``report.txt`` (the
terminal report at 100 columns, trailing blanks stripped), ``summary.json``, ``report.html``,
``report.xml`` (JUnit) and ``exit-status``. One more sample shows a failing replay:
``reports/misrouted/`` replays a copy of ``story-rolling-restart-migrate`` whose last accept was
moved to another listener by hand (the copy is kept there as ``trace.parquet``);
``reports/what-if-migration/`` and ``reports/baselined/`` show the CI options (`gated`);
``reports/debian-6.1-under-6.13/`` replays a trace from Debian 6.1 under another kernel's profile
(`other_kernel`). These outputs are deterministic: rerunning changes no byte unless tracekit or
the fixtures changed.
Last, each report gets ``report.png``, a screenshot of its HTML in headless Chromium (needs
Playwright and Chromium, skipped otherwise; pixels may differ with the machine's fonts).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures" / "recorded"
REPORTS = ROOT / "reports"
RUN_CLI = "from tracekit.cli import main; main()"
sys.path.insert(0, str(ROOT))  # run as a script from a checkout: tracekit need not be installed


def traces(directory: Path) -> list[Path]:
    """The traces directly in ``directory``: Parquet files and ``host=`` partitioned directories
    (a plain folder of traces, such as ``fleet/``, is a collection, not one trace)."""
    return sorted(p for p in directory.iterdir()
                  if p.suffix == ".parquet" or (p.is_dir() and any(p.glob("host=*"))))


def generate(trace: Path, out: Path, *options: str) -> int:
    """Replay one trace into ``out`` (with more ``options`` for ``tracekit replay``); returns
    its exit status."""
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, COLUMNS="100", TERM="dumb", NO_COLOR="1", PYTHONPATH=str(ROOT))
    command = [
        sys.executable, "-c", RUN_CLI, "replay", str(trace.relative_to(ROOT)),
        "--json", str(out / "summary.json"), "--html", str(out / "report.html"),
        "--junit", str(out / "report.xml"), *options,
    ]
    run = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if run.returncode not in (0, 1):
        sys.stderr.write(run.stderr)
        raise SystemExit(f"tracekit replay {trace.name} failed with exit status {run.returncode}")
    (out / "report.txt").write_text("".join(line.rstrip() + "\n" for line in run.stdout.splitlines()))
    (out / "exit-status").write_text(f"{run.returncode}\n")
    return run.returncode


def misroute(source: Path, target: Path) -> Path:
    """Copy a trace with its last `accept` observed on another listener of the same port."""
    import pyarrow.parquet as pq

    from tracekit.trace import read_metadata, write_trace

    rows = pq.read_table(source).to_pylist()
    last = next(row for row in reversed(rows) if row["event"] == "accept")
    listeners = sorted({row["sk"] for row in rows if row["event"] == "accept"
                        and (row["host"], row["lport"]) == (last["host"], last["lport"])} - {last["sk"]})
    last["sk"] = listeners[0]
    metadata = read_metadata(source)
    metadata["tracekit.edited"] = f"last accept (seq {last['seq']}) moved to sk {last['sk']}"
    return write_trace(target, rows, metadata, source=metadata["tracekit.source"])


def main() -> None:
    found = traces(FIXTURES)
    if not found:
        raise SystemExit(f"no traces in {FIXTURES}")
    for trace in found:
        status = generate(trace, REPORTS / trace.name.removesuffix(".parquet"))
        print(f"{trace.relative_to(ROOT)}: exit status {status}")
    out = REPORTS / "misrouted"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    edited = misroute(FIXTURES / "story-rolling-restart-migrate.parquet", out / "trace.parquet")
    status = generate(edited, out)
    print(f"{out.relative_to(ROOT)}: exit status {status}")
    gated(out / "trace.parquet")
    other_kernel()
    screenshots(sorted(REPORTS.glob("*/report.html")))


def other_kernel() -> None:
    """Where kernels differ: ``reports/debian-6.1-under-6.13/`` replays the UDP story recorded on
    Debian 6.1 under the 6.13 profile (this host's), whose connected UDP socket leaves its group;
    each mismatch's explanation names that behaviour."""
    out = REPORTS / "debian-6.1-under-6.13"
    status = generate(FIXTURES / "debian-6.1-story-udp-connected.parquet", out, "--profile", "6.13")
    print(f"{out.relative_to(ROOT)}: exit status {status}")


def gated(misrouted: Path) -> None:
    """The CI samples: ``reports/what-if-migration/`` asks what migration would have done to the
    rolling restart recorded without it, with a resets gate that fails; ``reports/baselined/``
    replays the misrouted trace against a baseline (``known.json``) that accepts its mismatch."""
    trace = FIXTURES / "story-rolling-restart-no-migrate.parquet"
    out = REPORTS / "what-if-migration"
    status = generate(trace, out, "--what-if", "net.ipv4.tcp_migrate_req=1",
                      "--fail-on", "resets>0", "--fail-on", "imbalance>1.5")
    print(f"{out.relative_to(ROOT)}: exit status {status}")
    out = REPORTS / "baselined"
    out.mkdir(exist_ok=True)
    known = out / "known.json"
    generate(misrouted, out, "--write-baseline", str(known.relative_to(ROOT)))
    status = generate(misrouted, out, "--baseline", str(known.relative_to(ROOT)))
    print(f"{out.relative_to(ROOT)}: exit status {status}")


def screenshots(pages: list[Path]) -> None:
    """``report.png`` beside each report: the top of the page in headless Chromium at 1280 px
    (tracekit.report.browser). Skipped, with a note, where Playwright or Chromium is missing."""
    from tracekit.report.browser import check_page, chromium_path, open_browser

    try:
        import playwright  # noqa: F401
    except ImportError:
        print("screenshots skipped: pip install playwright (in the test extra)")
        return
    if chromium_path() is None:
        print("screenshots skipped: no chromium (Debian package chromium, or TRACEKIT_CHROMIUM)")
        return
    with open_browser() as context:
        for page in pages:
            check = check_page(context, page, screenshot=page.with_name("report.png"))
            problems = f"; overflows: {list(check.overflows)}" if check.overflows else ""
            print(f"{page.with_name('report.png').relative_to(ROOT)}: {len(check.charts)} charts"
                  f"{problems}")


if __name__ == "__main__":
    main()
