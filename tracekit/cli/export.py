"""``tracekit export``: a trace and its replay in another tool's format
(`tracekit.report.perfetto.export_perfetto`)."""

from __future__ import annotations

from collections.abc import Callable

import click

from tracekit.cli import cli_errors
from tracekit.cli.replay import _policies


@click.command("export")
@click.argument("trace", type=click.Path(dir_okay=True))
@click.option("--perfetto", "perfetto_path", required=True, type=click.Path(dir_okay=False),
              metavar="OUT.pftrace",
              help="Write a Perfetto trace: a track per socket (its slot over time), decisions "
              "as instants, mismatches flagged, migrations as flows.")
@click.option("--profile", default="auto", show_default=True, metavar="NAME|auto",
              help="Kernel behaviour profile; auto picks it from the trace's tracekit.kernel.")
@click.option("--policy", "policies", multiple=True, metavar="NAME=module:function",
              callback=_policies,
              help="Register a Python function as the eBPF program NAME (repeatable).")
@cli_errors
def command(trace: str, perfetto_path: str, profile: str,
            policies: dict[str, Callable]) -> None:
    """Replay TRACE and write it with its replay for the Perfetto UI (ui.perfetto.dev).

    Exit status: 0 written (mismatches are in the file, not in the status), 2 bad input or
    usage, 3 internal error.
    """
    from tracekit.report.perfetto import export_perfetto

    done = export_perfetto(trace, perfetto_path, profile=profile, policies=policies or None)
    click.echo(
        f"wrote {done.path}: {done.packets} packets, {done.hosts} hosts, {done.groups} groups, "
        f"{done.sockets} socket tracks, {done.decisions} decisions ({done.mismatches} mismatched), "
        f"{done.migrations} migrations", err=True)
