"""A read-only folder for tests that need one, also when the tests run as root."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest


@contextmanager
def read_only(folder: Path) -> Iterator[Path]:
    """`folder` with mode 0o555 for the block. Modes do not stop root, so as root `os.open` and
    `os.mkdir` also refuse to make a new entry in `folder` (or below it), as the kernel would."""
    folder = Path(folder).resolve()

    def refuse(path: Any) -> None:
        where = Path(os.path.abspath(os.fspath(path)))
        if folder in where.parents and not where.exists():
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))

    with pytest.MonkeyPatch.context() as patch:
        if os.geteuid() == 0:
            real_open, real_mkdir = os.open, os.mkdir

            def fake_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
                if flags & os.O_CREAT:
                    refuse(path)
                return real_open(path, flags, *args, **kwargs)

            def fake_mkdir(path: Any, *args: Any, **kwargs: Any) -> None:
                refuse(path)
                real_mkdir(path, *args, **kwargs)

            patch.setattr(os, "open", fake_open)
            patch.setattr(os, "mkdir", fake_mkdir)
        folder.chmod(0o555)
        try:
            yield folder
        finally:
            folder.chmod(0o755)
