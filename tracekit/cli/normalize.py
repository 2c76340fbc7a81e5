"""``tracekit normalize``: JSON Lines to a Parquet trace (`tracekit.trace.normalize_jsonl`)."""

from __future__ import annotations

import click

from tracekit.cli import cli_errors


@click.command("normalize")
@click.argument("input", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Parquet trace to write (replaced only when every row is valid).")
@click.option("--host", default=None, help="Host for rows that have none.")
@click.option("--kernel", default=None, metavar="RELEASE",
              help="The capture host's `uname -r`, stored as tracekit.kernel metadata.")
@cli_errors
def command(input: str, output: str, host: str | None, kernel: str | None) -> None:
    """Convert the JSON Lines trace INPUT into a Parquet trace, checking every row."""
    from tracekit.trace import normalize_jsonl, read_metadata
    from tracekit.trace.read import open_part, trace_parts

    written = normalize_jsonl(input, output, host=host, kernel=kernel)
    rows = open_part(trace_parts(written)[0]).metadata.num_rows
    click.echo(f"wrote {written}: {rows} rows, {read_metadata(written)['tracekit.format']}")
