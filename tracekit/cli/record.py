"""``tracekit record``: run a scenario (or a random walk) against this machine's kernel in a private
network namespace and write the trace (`tracekit.recorder.record`)."""

from __future__ import annotations

import sys

import click

from tracekit.cli import EXIT_DIVERGENCES, cli_errors


@click.command("record")
@click.argument("scenario", required=False)
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Trace file to write (Parquet).")
@click.option("--random", "random_seed", type=int, metavar="SEED", help="Record a reproducible random walk instead.")
@click.option("--steps", type=click.IntRange(min=1), default=50, show_default=True, help="Operations in the random walk.")
@click.option("--list", "list_only", is_flag=True, help="List the built-in scenarios and exit.")
@click.option("--vm", metavar="KERNEL",
              help="Record on KERNEL booted under QEMU: an image path, a release under /boot or a prefix (6.1).")
@click.option("--vm-timeout", type=click.FloatRange(min=1), metavar="SECONDS",
              help="With --vm: seconds the recording may take in the guest (default 1800).")
@cli_errors
def command(scenario: str | None, output: str | None, random_seed: int | None, steps: int, list_only: bool,
            vm: str | None, vm_timeout: float | None) -> None:
    """Record SCENARIO (a built-in name or a .toml file) into -o TRACE.

    Exit status 1 when the kernel broke one of the scenario's [[expect]] tables (the trace is
    still written), 2 when the machine cannot record (no root, namespaces or BPF; with --vm: no
    QEMU or no such kernel, or the guest failed)."""
    from tracekit.recorder import list_scenarios, record
    from tracekit.recorder.api import ExpectationFailed

    if list_only:
        for name, description in list_scenarios().items():
            click.echo(f"{name:48} {description}")
        return
    if (scenario is None) == (random_seed is None):
        raise click.UsageError("give a SCENARIO or --random SEED (one of them)", ctx=click.get_current_context())
    if output is None:
        raise click.UsageError("-o/--output is required", ctx=click.get_current_context())
    command_line = " ".join(["tracekit", *sys.argv[1:]]) if sys.argv[1:2] == ["record"] else None
    try:
        path = record(scenario, random_seed=random_seed, steps=steps if random_seed is not None else None, output=output,
                      command=command_line, vm=vm, vm_timeout=vm_timeout)
    except ExpectationFailed as failure:
        click.echo(f"tracekit: {failure}", err=True)
        sys.exit(EXIT_DIVERGENCES)
    click.echo(f"wrote {path}")
