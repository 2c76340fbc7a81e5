"""Exceptions tracekit raises for problems a user can act on.

Every error a user can fix (bad input, a bad option, a trace of another format) is a
`TracekitError`. The CLI prints it as ``tracekit: <message>`` and exits with status 2; any other
exception is a bug in tracekit and exits with status 3.
"""

from __future__ import annotations

__all__ = ["StoryError", "TracekitError", "TraceFormatError"]


class TracekitError(Exception):
    """A problem with the user's input or request, explained in the message."""


class TraceFormatError(TracekitError):
    """A trace breaks the format: the message names the file, the row and the column.

    The row is a ``line`` for line-oriented input (JSON Lines) or the ``host`` and ``seq`` of the
    row for a table::

        trace.jsonl: line 7, column 'lport': 70000 is out of range 0..65535
        t.parquet: row host=h1 seq=12, column 'hash': missing (required by event 'syn')
    """

    def __init__(
        self,
        message: str,
        *,
        file: str,
        line: int | None = None,
        host: str | None = None,
        seq: int | None = None,
        column: str | None = None,
    ) -> None:
        self.message = message
        self.file = str(file)
        self.line = line
        self.host = host
        self.seq = seq
        self.column = column
        super().__init__(self._render())

    def _render(self) -> str:
        where = []
        if self.line is not None:
            where.append(f"line {self.line}")
        elif self.host is not None or self.seq is not None:
            where.append(f"row host={self.host} seq={self.seq}")
        if self.column is not None:
            where.append(f"column {self.column!r}")
        location = f"{self.file}: " + "".join(f"{part}, " for part in where[:-1])
        if where:
            location += f"{where[-1]}: "
        return location + self.message

    def __reduce__(self):  # keep the keyword-only fields through pickling (Dask workers)
        return (
            _rebuild_trace_format_error,
            (self.message, self.file, self.line, self.host, self.seq, self.column),
        )


def _rebuild_trace_format_error(message, file, line, host, seq, column) -> TraceFormatError:
    return TraceFormatError(message, file=file, line=line, host=host, seq=seq, column=column)


class StoryError(TracekitError):
    """A row tells what the kernel could not have done: a program it refuses reported as attached,
    a listen on a UDP socket reported as done, an operation on a socket never created.

    The model raises it with the column at fault; replay adds the row's ``host`` and ``seq`` and
    reports it as a `TraceFormatError` naming the file (exit status 2).
    """

    def __init__(self, message: str, column: str | None = None) -> None:
        self.message = message
        self.column = column
        self.host: str | None = None
        self.seq: int | None = None
        super().__init__(message)

    def __reduce__(self):
        return (_rebuild_story_error, (self.message, self.column, self.host, self.seq))

    def located(self, file: str) -> TraceFormatError:
        return TraceFormatError(self.message, file=file, host=self.host, seq=self.seq,
                                column=self.column)


def _rebuild_story_error(message, column, host, seq) -> StoryError:
    error = StoryError(message, column)
    error.host, error.seq = host, seq
    return error
