"""Opening an image file so that a bad one is an error to name or skip, never a hang or a traceback.

Only a regular file is read: a FIFO or a device named `x.png` would block the read (or never end),
beyond the reach of a stop signal. The file is opened without blocking and checked on the open
descriptor, so it cannot be swapped for something else between the check and the read. An image
over Pillow's decompression-bomb limit (twice `PIL.Image.MAX_IMAGE_PIXELS`; Pillow only warns
between one and two times it) is refused like an unreadable one; a user who trusts such files
raises `PIL.Image.MAX_IMAGE_PIXELS`.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from PIL import Image

from ..files import open_regular

# What reading a damaged, hostile or non-image file raises (a DecompressionBombError is turned
# into an OSError by `open_image`).
UNREADABLE_ERRORS = (OSError, SyntaxError, ValueError)


def is_regular_file(path: str | os.PathLike[str]) -> bool:
    """True for a regular file (or a link to one); False for folders, FIFOs, devices, sockets."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def _regular_file(path: str | os.PathLike[str]) -> BinaryIO:
    """`path` opened for reading if it is a regular file (see `files.open_regular`), else an OSError."""
    fd = open_regular(path)
    if fd is None:
        raise OSError("not a regular file (a FIFO, device or socket is never read as an image)")
    return open(fd, "rb")


def _pillow_open(file: BinaryIO) -> Image.Image:
    try:
        return Image.open(file)
    except Image.DecompressionBombError as exc:
        raise OSError(f"{exc} (the limit is twice PIL.Image.MAX_IMAGE_PIXELS = {Image.MAX_IMAGE_PIXELS})") from None


@contextmanager
def open_image(path: str | os.PathLike[str]) -> Iterator[Image.Image]:
    """Pillow's lazy image of a regular file; anything else, or a decompression bomb, is an OSError."""
    with _regular_file(path) as file, _pillow_open(file) as image:
        yield image


def read_rgb(path: str | os.PathLike[str] | Path) -> Image.Image:
    """The decoded RGB image of `path` (see `open_image` for what is refused). Called for every
    training sample, so it opens the file directly rather than through `open_image`'s generator."""
    with _regular_file(path) as file, _pillow_open(file) as image:
        return image.convert("RGB")
