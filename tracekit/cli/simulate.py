"""``tracekit simulate``: write a synthetic trace (`tracekit.simulator.api.simulate`)."""

from __future__ import annotations

import sys

import click

from tracekit.cli import cli_errors
from tracekit.cli.progress import progress_bar

# Kept in step with tracekit.simulator.workloads.WORKLOADS (a test checks); listed here so that
# `tracekit --help` does not import NumPy.
WORKLOAD_NAMES = ("steady", "rolling-restart", "scale", "udp-connected", "cbpf", "mutation-heavy")


@click.command("simulate")
@click.argument("workload", required=False, default="steady", type=click.Choice(WORKLOAD_NAMES),
                metavar="[WORKLOAD]")
@click.option("--events", "-n", type=click.IntRange(min=1), default=100_000, show_default=True,
              help="Number of events in the trace (over all hosts).")
@click.option("--seed", "-s", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of every random choice: same arguments, same bytes.")
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False),
              help="Parquet file to write.")
@click.option("--hosts", type=click.IntRange(min=1), default=1, show_default=True,
              help="Number of hosts; the events are split between them.")
@click.option("--inject-faults", "inject_faults", type=click.FloatRange(0.0, 1.0), default=0.0,
              show_default=True, metavar="RATE",
              help="Move this fraction of the observed selections to a wrong socket. The moved "
              "rows are listed in the trace's metadata (tracekit.simulate.faults) when few, "
              "else in OUTPUT.faults.parquet.")
@click.option("--kernel", default=None, metavar="RELEASE",
              help="Simulate the behaviour of this kernel release (uname -r), stored as "
              "tracekit.kernel. Default: the newest profile, no tracekit.kernel.")
@click.option("--layer", type=click.Choice(("kernel", "socket")), default="kernel",
              show_default=True,
              help="kernel: the calls into sock_reuseport.c a probe records; socket: the "
              "syn/accept and datagram/recv a recorder or application log records "
              "(steady and mutation-heavy only).")
@cli_errors
def command(workload: str, events: int, seed: int, output: str, hosts: int, inject_faults: float,
            kernel: str | None, layer: str) -> None:
    """Write a synthetic trace of WORKLOAD (default: steady).

    \b
    Workloads:
      steady           busy ports, many flows, no group changes (selection-dominated)
      rolling-restart  listeners replaced one by one, with and without migration
      scale            groups grow past 128 sockets and shrink to nothing
      udp-connected    UDP groups whose members connect and disconnect
      cbpf             classic BPF programs steer by payload
      mutation-heavy   a group change every 100 events

    With --layer socket: steady is four busy ports with one listener replaced every 65536
    connections, mutation-heavy a group change every ten events or so.

    The kernel model decides every observation, so the trace replays with no mismatch (except
    those --inject-faults puts in).
    """
    from tracekit.simulator.api import simulate

    with progress_bar("simulating", sys.stderr.isatty()) as progress:
        path = simulate(workload, events=events, seed=seed, output=output,
                        inject_faults=inject_faults, hosts=hosts, kernel=kernel, layer=layer,
                        progress=progress)
    click.echo(f"wrote {events} events of workload {workload!r} to {path}", err=True)
