"""``tracekit replay``: replay a trace through the kernel model and report (`tracekit.replay`).

One call into the API (`tracekit.replay.api.replay`), then the views of its result: the rich
report on stdout, and the files asked for. Every file is written to a temporary name and renamed
into place only when all of them are complete, so an error leaves no output from this run at all.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import click

from tracekit.cli import EXIT_DIVERGENCES, cli_errors
from tracekit.cli.progress import progress_bar

__all__ = ["command", "parse_policy"]


def parse_policy(spec: str) -> tuple[str, Callable[..., Any]]:
    """``NAME=module:function`` -> (NAME, the function); a bad spec is a usage error."""
    name, sep, target = spec.partition("=")
    module_name, colon, attribute = target.partition(":")
    if not (sep and colon and name and module_name and attribute):
        raise click.BadParameter(f"{spec!r} is not NAME=module:function", param_hint="'--policy'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise click.BadParameter(f"{spec!r}: cannot import {module_name}: {error}", param_hint="'--policy'")
    function = getattr(module, attribute, None)
    if not callable(function):
        raise click.BadParameter(f"{spec!r}: {module_name} has no function {attribute!r}", param_hint="'--policy'")
    return name, function


def _policies(ctx: click.Context, param: click.Parameter, specs: tuple[str, ...]) -> dict[str, Callable]:
    policies: dict[str, Callable] = {}
    for spec in specs:
        name, function = parse_policy(spec)
        if name in policies:
            raise click.BadParameter(f"policy {name!r} is given twice", param_hint="'--policy'")
        policies[name] = function
    return policies


def _rendered(replay: Any, json_path: str | None, html_path: str | None,
              junit_path: str | None) -> list[tuple[Path, bytes]]:
    """(target, content) for each report file asked for (only its renderer is imported)."""
    import tracekit.report as report

    renderers = (
        (json_path, lambda: report.summary_json(replay.summary)),
        (html_path, lambda: report.render_html(replay).encode("utf-8")),
        (junit_path, lambda: report.render_junit(replay)),
    )
    return [(Path(path), render()) for path, render in renderers if path]


def _gates(ctx: click.Context, param: click.Parameter, specs: tuple[str, ...]) -> tuple[str, ...]:
    """Each --fail-on checked before the replay starts."""
    if not specs:
        return specs
    from tracekit.replay.gates import parse_gate

    return _usage(param, lambda: [parse_gate(spec) for spec in specs], specs)


def _what_ifs(ctx: click.Context, param: click.Parameter, specs: tuple[str, ...]) -> tuple[str, ...]:
    """The --what-if changes checked before the replay starts."""
    if not specs:
        return specs
    from tracekit.replay.whatif import parse_what_if

    return _usage(param, lambda: parse_what_if(specs), specs)


def _usage(param: click.Parameter, check: Callable[[], object], specs: tuple[str, ...]) -> tuple[str, ...]:
    from tracekit.errors import TracekitError

    try:
        check()
    except TracekitError as err:  # the message starts with the option's name: click adds it
        raise click.BadParameter(str(err).split(": ", 1)[-1], param=param) from None
    return specs


@click.command("replay")
@click.argument("trace", type=click.Path(dir_okay=True))
@click.option("--profile", default="auto", show_default=True, metavar="NAME|auto|fit",
              help="Kernel behaviour profile; auto picks it from the trace's tracekit.kernel, "
                   "fit replays under each and takes the one with the fewest mismatches.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), metavar="SUMMARY.json",
              help="Write the summary (tracekit-result/1, canonical JSON).")
@click.option("--results", "results_path", type=click.Path(dir_okay=False), metavar="RESULTS.parquet",
              help="Write one row per decision.")
@click.option("--html", "html_path", type=click.Path(dir_okay=False), metavar="REPORT.html",
              help="Write a self-contained HTML report.")
@click.option("--junit", "junit_path", type=click.Path(dir_okay=False), metavar="REPORT.xml",
              help="Write JUnit XML: a testsuite per host, a testcase per reuseport group.")
@click.option("--explain/--no-explain", default=True, show_default=True,
              help="Print each listed mismatch's explanation.")
@click.option("--explain-all", is_flag=True,
              help="Explain every decision in --results, not only the mismatches (slower).")
@click.option("--max-mismatches", type=click.IntRange(min=0), default=10, show_default=True,
              metavar="N", help="List at most N mismatches in the terminal report.")
@click.option("--policy", "policies", multiple=True, metavar="NAME=module:function",
              callback=_policies,
              help="Register a Python function as the eBPF program NAME (repeatable).")
@click.option("--dask", "dask_address", metavar="ADDRESS|local",
              help="Replay in tasks of whole hosts on a Dask cluster (a scheduler address, or 'local': "
                   "one worker per CPU, forked from this process).")
@click.option("--baseline", "baseline_path", type=click.Path(dir_okay=False), metavar="KNOWN.json",
              help="Accepted divergences (tracekit-baseline/1): only mismatches not in it fail.")
@click.option("--write-baseline", "write_baseline_path", type=click.Path(dir_okay=False),
              metavar="KNOWN.json", help="Write this replay's mismatches as accepted divergences.")
@click.option("--fail-on", "fail_on", multiple=True, metavar="GATE", callback=_gates,
              help="Fail on a gate: imbalance>X, resets>N, unknown>X (repeatable).")
@click.option("--what-if", "what_if", multiple=True, metavar="CHANGE",
              callback=_what_ifs,
              help="Replay again with a change (net.ipv4.tcp_migrate_req=1, profile=NAME, "
                   "close=SK@SEQ, add=SK@SEQ; repeatable) and report what would differ.")
@cli_errors
def command(trace: str, profile: str, json_path: str | None, results_path: str | None,
            html_path: str | None, junit_path: str | None, explain: bool, explain_all: bool,
            max_mismatches: int, policies: dict[str, Callable], dask_address: str | None,
            baseline_path: str | None, write_baseline_path: str | None,
            fail_on: tuple[str, ...], what_if: tuple[str, ...]) -> None:
    """Replay TRACE through the kernel model and diff every decision against what was observed.

    Exit status: 0 every decision matched or was unknown (with --baseline: no new mismatch;
    with --write-baseline: the mismatches are accepted), 1 mismatches or a --fail-on gate failed,
    2 bad input or usage, 3 internal error.
    """
    starting = None
    if dask_address == "local":  # its workers start meanwhile (the fork server's imports too)
        from tracekit.replay import forkserver
        from tracekit.replay.localcluster import LocalClusterStart

        forkserver.start()
        starting = LocalClusterStart()
    from rich.console import Console

    from tracekit.cli.allocator import keep_freed_memory
    from tracekit.teardown import leave_for_exit
    from tracekit.replay.api import gate
    from tracekit.replay.api import replay as run_replay
    from tracekit.report import render_replay
    from tracekit.trace.output import atomic_path

    keep_freed_memory()
    with ExitStack() as outputs:  # every file is renamed into place only if all of them succeed
        if starting is not None:
            outputs.enter_context(starting)  # (replay_on_dask closes it once it is done)
        results = outputs.enter_context(atomic_path(Path(results_path))) if results_path else False
        with progress_bar("replaying", sys.stderr.isatty()) as progress:
            if dask_address:
                from tracekit.replay.api import write_results
                from tracekit.replay.distributed import replay_on_dask

                result = replay_on_dask(trace, starting or dask_address, profile=profile,
                                        policies=policies or None, results=bool(results),
                                        explain_all=explain_all, progress=progress)
                if results:
                    write_results(result, results)
            else:
                result = run_replay(trace, profile=profile, policies=policies or None,
                                    results=results, explain_all=explain_all, progress=progress)
            leave_for_exit()  # the dead model state, not collected (`tracekit.teardown`)
        gate(result, baseline=baseline_path, fail_on=fail_on, what_if=what_if,
             policies=policies or None, results=results or None)
        rendered = _rendered(result, json_path, html_path, junit_path)
        if write_baseline_path:
            from tracekit.replay import ci

            rendered.append((Path(write_baseline_path), ci.baseline_text(result)))
        for target, content in rendered:
            outputs.enter_context(atomic_path(target)).write_bytes(content)
    Console(highlight=False).print(render_replay(result, max_mismatches=max_mismatches, explain=explain))
    failed = [failure for g in result.summary.get("gates", ()) for failure in
              [f"gate {g['gate']} failed: {message}" for message in g["failures"]]]
    for message in failed:
        click.echo(f"tracekit: {message}", err=True)
    if failed or (result.exit_code and not write_baseline_path):
        sys.exit(EXIT_DIVERGENCES)
