"""``tracekit validate``: check a trace and summarise it (`tracekit.trace.validate_trace`)."""

from __future__ import annotations

import click

from tracekit.cli import cli_errors


@click.command("validate")
@click.argument("trace", type=click.Path())
@cli_errors
def command(trace: str) -> None:
    """Check TRACE (a Parquet file or host= directory) against the format and summarise it."""
    from rich.console import Console

    from tracekit.trace import validate_trace

    summary = validate_trace(trace)
    Console(highlight=False).print(summary)
