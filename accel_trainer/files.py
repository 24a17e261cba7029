"""Writing an output file whole or not at all, and never through a symbolic link.

A reader (or a rerun after a crash) sees the previous file or the complete new one, never a
half-written one: the writer fills a hidden temporary sibling, which is flushed to disk and then
renamed over the target in one step. The rename replaces a link at the target's name, not the
file it points to, so a link planted in a work_dir cannot redirect a write elsewhere; files that
grow (logs) are opened with O_NOFOLLOW instead.
"""

from __future__ import annotations

import errno
import io
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import RecipeError


def fsync(path: Path) -> None:
    """Flush a file's data, or a folder's entries (which makes a rename in it durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_write(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path in `path`'s folder (created if missing) for the caller to write;
    on success it replaces `path`, on any error it is removed and `path` is left as it was."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    tmp.unlink(missing_ok=True)  # a leftover, or a link someone planted: the writer gets a fresh file
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644))
    try:
        yield tmp
        fsync(tmp)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync(out.parent)


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """`atomic_write` of a UTF-8 text file."""
    with atomic_write(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def open_append(path: str | os.PathLike[str]) -> io.TextIOWrapper:
    """Open a UTF-8 log for appending, created if missing; a symbolic link there is refused, not followed."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise RecipeError(
                f"{path}: is a symbolic link; remove it (files in a work_dir are written in place)"
            ) from None
        raise
    return open(fd, "a", encoding="utf-8")
