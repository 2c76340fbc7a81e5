"""``tracekit probe``: capture reuseport decisions of the running kernel (`tracekit.probe.probe`)."""

from __future__ import annotations

import shlex
import sys

import click

from tracekit.cli import cli_errors


@click.command("probe")
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False),
              help="Parquet trace to write (complete when the capture ends, absent if it fails).")
@click.option("--duration", "-d", type=click.FloatRange(min=0, min_open=True), default=None,
              metavar="SECONDS", help="Stop after this many seconds (default: at Ctrl-C/SIGTERM).")
@click.option("--port", "-p", "ports", type=click.IntRange(1, 65535), multiple=True,
              metavar="PORT", help="Only groups on this local port (repeatable; default: all).")
@click.option("--netns", type=click.Path(exists=True, dir_okay=False), default=None,
              metavar="PATH", help="Only this network namespace (/proc/PID/ns/net, "
              "/run/netns/NAME; default: all, one trace host each).")
@cli_errors
def command(output: str, duration: float | None, ports: tuple[int, ...], netns: str | None) -> None:
    """Capture what the running kernel's SO_REUSEPORT code decides, as a kernel-layer trace.

    Attaches kprobes to the functions of net/core/sock_reuseport.c with bpftrace (root, kernel
    BTF and kprobes needed) and writes every group change, selection and migration until
    --duration ends or Ctrl-C / SIGTERM. Replay the trace with `tracekit replay`.
    """
    from tracekit.probe import probe

    live = sys.stderr.isatty()

    def ready(stats) -> None:
        click.echo(f"tracekit: probe attached ({stats.attached_probes} probes, "
                   f"{stats.ready_after_s:.1f} s); capturing", err=True)

    def tick(stats) -> None:
        if live:
            sys.stderr.write("\r" + stats.live() + "   ")
            sys.stderr.flush()

    command_line = "tracekit probe " + shlex.join(sys.argv[2:]) if len(sys.argv) > 2 else None
    stats = probe(output, duration=duration, ports=ports, netns=netns, on_ready=ready,
                  on_tick=tick, command=command_line)
    if live:
        sys.stderr.write("\n")
    click.echo(f"wrote {stats.rows:,} events to {output} ({stats.lost:,} lost)", err=True)
