"""The ``tracekit`` command line: a click group over the Python API.

Each command lives in ``tracekit/cli/<name>.py`` and exposes a click command object named
``command``; `main` registers those of `COMMANDS` whose module exists. Command modules import
only click (and tracekit.cli) at module level and do heavy imports (pyarrow, pandas) inside the
command body, so ``tracekit --help`` stays fast.

Exit codes: 0 ok, 1 divergences found, 2 bad input or usage, 3 internal error.

Errors: every command runs inside `errors_to_exit_codes` (the group applies it; decorate a
command with `cli_errors` to get the same when it is invoked on its own)::

    @click.command("validate")
    @click.argument("trace")
    @cli_errors
    def command(trace):
        from tracekit.trace import validate_trace   # heavy import inside the body
        ...

A `tracekit.errors.TracekitError` becomes ``tracekit: <message>`` on stderr and exit status 2;
so does a click usage error (a bad option value, a missing argument), on one line that names the
option and points at ``--help``; an ``OSError`` (a file that cannot be read or written) exits 2 the same way; any other exception
is a bug: a one-line ``tracekit: internal error: ...`` with a hint, exit status 3. Set
``TRACEKIT_DEBUG=1`` to get the traceback instead.
"""

from __future__ import annotations

import functools
import importlib
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import click

from tracekit.errors import TracekitError

__all__ = ["COMMANDS", "EXIT_OK", "EXIT_DIVERGENCES", "EXIT_BAD_INPUT", "EXIT_INTERNAL",
           "cli_errors", "errors_to_exit_codes", "fail", "main", "run"]

COMMANDS = ("normalize", "validate", "record", "replay", "simulate", "export", "probe")

EXIT_OK = 0
EXIT_DIVERGENCES = 1
EXIT_BAD_INPUT = 2
EXIT_INTERNAL = 3

F = TypeVar("F", bound=Callable)


def fail(message: str, code: int = EXIT_BAD_INPUT) -> None:
    """Print ``tracekit: <message>`` on stderr and exit with ``code``."""
    click.echo(f"tracekit: {message}", err=True)
    sys.exit(code)


@contextmanager
def errors_to_exit_codes() -> Iterator[None]:
    """Turn exceptions into the CLI's messages and exit codes (see the module docstring)."""
    try:
        yield
    except click.exceptions.NoArgsIsHelpError:
        raise
    except click.exceptions.ClickException as error:
        _fail_on_one_line(error)
    except (click.exceptions.Exit, click.exceptions.Abort):
        raise
    except TracekitError as error:
        fail(str(error))
    except BrokenPipeError:  # `tracekit ... | head`: click exits quietly
        raise
    except OSError as error:
        fail(_describe_os_error(error))
    except Exception as error:
        if os.environ.get("TRACEKIT_DEBUG"):
            raise
        fail(
            f"internal error: {type(error).__name__}: {error}\n"
            "tracekit: this is a bug in tracekit; rerun with TRACEKIT_DEBUG=1 for the traceback "
            "and report it",
            EXIT_INTERNAL,
        )


def _fail_on_one_line(error: click.exceptions.ClickException) -> None:
    message = error.format_message()
    context = getattr(error, "ctx", None)
    if isinstance(error, click.exceptions.UsageError) and context is not None:
        message += f" (see '{context.command_path} --help')"
    fail(message, error.exit_code)


def _describe_os_error(error: OSError) -> str:
    reason = error.strerror or str(error)
    return f"{error.filename}: {reason}" if error.filename else reason


def cli_errors(function: F) -> F:
    """Decorator: run a command body inside `errors_to_exit_codes`."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with errors_to_exit_codes():
            return function(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


class _Group(click.Group):
    def make_context(self, info_name, args, parent=None, **extra):  # type: ignore[no-untyped-def]
        with errors_to_exit_codes():
            return super().make_context(info_name, args, parent, **extra)

    def invoke(self, ctx: click.Context):
        with errors_to_exit_codes():
            return super().invoke(ctx)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """tracekit: record, replay and diff Linux SO_REUSEPORT socket selection.

    Traces are Parquet files in the tracekit-trace/1 format; see the README.
    """


def run() -> None:
    """The ``tracekit`` command (and ``python -m tracekit``): `main` in a process that ends with
    it, so a replay's dead state is left to the exit (`tracekit.teardown`). Tests run `main`
    in-process, where nothing is left."""
    from tracekit.teardown import command_process

    command_process()
    main(prog_name="tracekit")


def _register_commands() -> None:
    for name in COMMANDS:
        module_name = f"{__name__}.{name}"
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name == module_name:
                continue
            raise
        main.add_command(module.command, name)


_register_commands()
