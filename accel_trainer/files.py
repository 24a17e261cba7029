"""Writing an output file whole or not at all and never through a symbolic link; reading only regular files.

A reader (or a rerun after a crash) sees the previous file or the complete new one, never a
half-written one: the writer fills a hidden temporary sibling, which is flushed to disk and then
renamed over the target in one step. The rename replaces a link at the target's name, not the
file it points to, so a link planted in a work_dir cannot redirect a write elsewhere; files that
grow (logs) are opened with O_NOFOLLOW instead.

Reading goes through `open_regular`: only a regular file is read as data or a checkpoint file, so
a FIFO or a device planted under a data or checkpoint name is refused at once, never read for ever.

A write the user can fix (a read-only folder, a full disk) is a `RecipeError` naming the path,
and commands check their output folder (`writable_folder`) or file (`check_output_file`) before
the work, not after it.
"""

from __future__ import annotations

import errno
import io
import os
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil

from .errors import RecipeError

# Why a write failed, for the errors that are the machine's state rather than a bug.
WRITE_FAILURES = {
    errno.EACCES: "not writable (permission denied)",
    errno.EPERM: "not writable (operation not permitted)",
    errno.EROFS: "not writable (read-only file system)",
    errno.ENOSPC: "cannot write: no space left on the device (the disk is full)",
    errno.EDQUOT: "cannot write: the disk quota is exceeded",
    errno.EEXIST: "cannot create the folder: a file of that name is in the way",
    errno.ENOTDIR: "cannot create: part of the path is a file, not a folder",
}


@contextmanager
def writing(path: str | os.PathLike[str]) -> Iterator[None]:
    """Turn a failed write under the block into one RecipeError naming `path` (other errors pass)."""
    try:
        yield
    except OSError as exc:
        reason = WRITE_FAILURES.get(exc.errno or 0)
        if reason is None:
            raise
        raise RecipeError(f"{path}: {reason}") from None


def writable_folder(folder: str | os.PathLike[str]) -> Path:
    """Create `folder` and write one byte in a probe file there, so a command that would fail at its
    end (a read-only work_dir, a full disk) fails before it starts."""
    folder = Path(folder)
    with writing(folder):
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-check-", dir=folder)
        try:
            os.write(fd, b"\0")
        finally:
            os.close(fd)
            os.unlink(probe)
    return folder


def open_regular(path: str | os.PathLike[str]) -> int | None:
    """A read-only descriptor of `path` when it is a regular file (or a link to one), else None (and
    nothing left open). It is opened without blocking and checked on the descriptor, so a FIFO or a
    device (a link to /dev/zero) is refused at once and cannot be swapped in between check and read."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    if stat.S_ISREG(os.fstat(fd).st_mode):
        return fd
    os.close(fd)
    return None


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
    on success it replaces `path`, on any error it is removed and `path` is left as it was (a failed
    write is a RecipeError naming `path`, see `writing`)."""
    out = Path(path)
    with writing(out):
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


def check_output_file(path: str | os.PathLike[str], flag: str) -> None:
    """Refuse, before any work, an output path that `atomic_write` could not fill at the end: an
    existing folder or other non-regular file, or a location where no file can be created (probed
    with a temporary file in the nearest existing folder, which also catches read-only mounts)."""
    out = Path(path).absolute()
    if out.is_dir():
        raise RecipeError(f"{flag} {path}: is a folder; expected a file name")
    if out.exists() and not out.is_file():
        raise RecipeError(f"{flag} {path}: exists and is not a regular file; expected a file name")
    folder = out.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise RecipeError(f"{flag} {path}: {folder} is not a folder")
    try:
        writable_folder(folder)
    except RecipeError as exc:
        raise RecipeError(f"{flag} {path}: {exc}") from None


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


def nesting(value: Any, limit: int) -> int:
    """How deeply lists and dicts nest in a value read from a file (the top one is level 1), found
    without recursion and without looking below `limit + 1` levels, so a hostile file costs little."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, (list, dict)):
            deepest = max(deepest, level)
            if level <= limit:
                stack.extend((v, level + 1) for v in (item.values() if isinstance(item, dict) else item))
    return deepest


def writer_alive(pid: int) -> bool:
    """Whether the process that named a temporary file or folder after its pid still runs here."""
    try:
        return psutil.pid_exists(pid)
    except (OverflowError, ValueError):  # a pid no process can have
        return False
