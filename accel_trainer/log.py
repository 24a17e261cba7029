"""Logging setup and the buffer that keeps per-iteration values on the device until logged."""

from __future__ import annotations

import io
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from .files import open_append, writable_folder

LOGGER_NAME = "accel_trainer"


class _SeedStyleFormatter(logging.Formatter):
    """`[11/22 14:30:25] message`, the seeds' console style."""

    def __init__(self) -> None:
        super().__init__("[%(asctime)s] %(message)s", datefmt="%m/%d %H:%M:%S")


class RunLogHandler(logging.FileHandler):
    """The run's text log, appended to without following a symbolic link planted at its name; it
    remembers whether a warning (or worse) went into it."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, encoding="utf-8")
        self.warned = False

    def _open(self) -> io.TextIOWrapper:
        return open_append(self.baseFilename)

    def emit(self, record: logging.LogRecord) -> None:
        self.warned = self.warned or record.levelno >= logging.WARNING
        super().emit(record)


def discard_unstarted_log() -> None:
    """Close the run's text log after a user error stopped the run before it trained; remove the
    file unless a warning went into it. The startup lines it holds are on the console too, and
    the error itself only there, so such a log would tell nothing."""
    log = logging.getLogger(LOGGER_NAME)
    for handler in list(log.handlers):
        if isinstance(handler, RunLogHandler):
            log.removeHandler(handler)
            handler.close()
            if not handler.warned:
                Path(handler.baseFilename).unlink(missing_ok=True)


@contextmanager
def quiet_info(name: str) -> Iterator[None]:
    """Leave out the INFO lines of logger `name` inside (its warnings still show)."""
    log = logging.getLogger(name)
    level = log.level
    log.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        log.setLevel(level)


def setup_logging(log_file: Path, level: str, is_main: bool) -> logging.Logger:
    """Console on every process at WARNING and above; INFO console and the text log on the main one,
    whose folder (the work_dir) is created and checked writable first: a read-only or full work_dir
    is one error line before the run builds anything."""
    log = logging.getLogger(LOGGER_NAME)
    for handler in list(log.handlers):
        log.removeHandler(handler)
        handler.close()
    log.setLevel(level if is_main else "WARNING")
    log.propagate = False
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(_SeedStyleFormatter())
    log.addHandler(console)
    if is_main:
        writable_folder(log_file.parent)
        file_handler = RunLogHandler(log_file)
        file_handler.setFormatter(_SeedStyleFormatter())
        log.addHandler(file_handler)
    return log


class LogBuffer:
    """Values of the current log window, shared by the logger hooks (mmcv's `runner.log_buffer`).

    Device values are summed without a sync; `average` syncs once per log interval and sets
    `output`, which every logger hook then writes; the last one clears it. A hook with
    `reset_flag` may clear it earlier: the hooks after it average again and get the same window.
    """

    def __init__(self) -> None:
        self._sums: dict[str, torch.Tensor] = {}
        self._count = 0
        self._host: dict[str, float] = {}
        self._host_count = 0
        self.output: dict[str, float] = {}
        self._last: dict[str, float] = {}

    @property
    def ready(self) -> bool:
        return bool(self.output)

    def update(self, values: dict[str, torch.Tensor]) -> None:
        """Add one batch's values (tensors, kept on the device)."""
        for key, value in values.items():
            value = value.detach().float()
            self._sums[key] = self._sums[key] + value if key in self._sums else value
        self._count += 1

    def update_host(self, values: dict[str, float]) -> None:
        """Add one iteration's host-side values (timings)."""
        for key, value in values.items():
            self._host[key] = self._host.get(key, 0.0) + value
        self._host_count += 1

    def average(self, accelerator) -> dict[str, float]:
        """Mean of the window, device values averaged across processes; starts a new window."""
        if not self._count and not self._host_count:
            self.output = dict(self._last)
            return self.output
        out: dict[str, float] = {}
        if self._host_count:
            out.update({k: v / self._host_count for k, v in self._host.items()})
        if self._sums:
            keys = list(self._sums)
            stacked = torch.stack([self._sums[k] for k in keys]) / self._count
            if accelerator.num_processes > 1:
                stacked = accelerator.reduce(stacked, reduction="mean")
            out.update(zip(keys, stacked.tolist()))
        self._sums, self._count, self._host, self._host_count = {}, 0, {}, 0
        self.output, self._last = out, dict(out)
        return out

    def clear_output(self) -> None:
        self.output = {}

    def clear(self) -> None:
        self._sums, self._count, self._host, self._host_count, self.output, self._last = {}, 0, {}, 0, {}, {}
