"""Write-then-rename: an output path appears complete or not at all."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tracekit.errors import TracekitError

__all__ = ["atomic_path", "scratch_path", "remove_path"]


def scratch_path(near: Path, suffix: str = "") -> Path:
    """A fresh, unused path in ``near``'s directory (so a rename onto ``near`` is atomic)."""
    descriptor, name = tempfile.mkstemp(prefix=f".{near.name}.", suffix=f"{suffix}.tmp", dir=near.parent)
    os.close(descriptor)
    os.unlink(name)
    return Path(name)


def remove_path(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _missing_ancestors(target: Path) -> list[Path]:
    """The directories above ``target`` that do not exist yet, innermost first."""
    missing = []
    parent = target.parent
    while not parent.exists() and parent != parent.parent:
        missing.append(parent)
        parent = parent.parent
    return missing


def _prepare(target: Path) -> Path:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        return scratch_path(target)
    except FileExistsError as error:  # some ancestor is a file
        raise TracekitError(f"{target}: cannot write: {error.filename} is not a directory") from None
    except OSError as error:
        reason = error.strerror or str(error)
        raise TracekitError(f"{target}: cannot write: {reason}") from None


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path; on success it replaces ``target``, on error it is removed.

    Missing parent directories are created (and removed again on error, so a failed run leaves
    nothing behind); a target that cannot be written raises a `TracekitError` naming it (not the
    temporary file).
    """
    created = _missing_ancestors(target)
    temporary = _prepare(target)
    try:
        yield temporary
    except BaseException:
        remove_path(temporary)
        for directory in created:
            try:
                directory.rmdir()
            except OSError:
                break
        raise
    if target.is_dir() and not target.is_symlink():
        old = scratch_path(target, ".old")
        target.rename(old)
        temporary.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        if temporary.is_dir() and target.exists():
            target.unlink()
        temporary.rename(target)
