"""Terminal progress bars (tqdm), shared by training, evaluation, `predict` and `export --check`.

Bars are drawn on stdout when it is a terminal (`--progress` / `--no-progress` force either way)
and only by the main process. They never reach the `.log` files: while a bar is open the package
logger's console handler writes through `tqdm.write` (lines land above the bar) and the file
handlers are left as they are.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from typing import Any

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from .log import LOGGER_NAME


def progress_enabled(requested: bool | None) -> bool:
    """`requested` when given (the `--progress` flags), else whether stdout is a terminal."""
    return sys.stdout.isatty() if requested is None else requested


def progress_bar(
    total: int | None, desc: str, unit: str, enabled: bool, *, leave: bool = True, initial: int = 0
) -> tqdm:
    """A bar on stdout; a disabled one is a no-op object, so callers need no branches."""
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        disable=not enabled,
        leave=leave,
        initial=initial,
        file=sys.stdout,
        dynamic_ncols=True,
    )


@contextlib.contextmanager
def log_above_bars(enabled: bool) -> Iterator[None]:
    """Console log lines go through `tqdm.write` while bars may be open (files untouched)."""
    if not enabled:
        yield
        return
    with logging_redirect_tqdm(loggers=[logging.getLogger(LOGGER_NAME)]):
        yield


def batch_size_of(batch: Any) -> int:
    """Images in a `(images, targets)` batch: a tensor's first dimension or a list's length."""
    images = batch[0] if isinstance(batch, (tuple, list)) else batch
    return len(images)
