"""One training run per work_dir and per checkpoint folder: two runs writing the same checkpoints
would destroy each other's.

The lock is an `flock` on `<work_dir>/.lock` and on `<checkpoint root>/.lock` (the same folder
unless `checkpoint_config.out_dir` puts it elsewhere, where runs of other work_dirs may meet),
held by the main process for the whole run. The kernel drops it when that process dies, however
it dies, so a killed run's lock is taken over by the next run without anyone deleting files. The
file records the holder's pid, host and work_dir for the message a second run prints; it is
opened without following a symbolic link. A run that ends as it should empties it, so only a
run that died leaves a record for the next one to warn about. Once the locks are held, temporary
checkpoint folders that dead processes left behind are removed.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any

from accelerate.utils import broadcast_object_list

from ..errors import RecipeError
from ..files import writing

if TYPE_CHECKING:
    from accelerate import Accelerator

    from ..checkpoint.manager import CheckpointManager

logger = logging.getLogger(__name__)

LOCK = ".lock"
# Locks this process holds, by path: a second Trainer in the same process (a notebook after an
# error) reuses it instead of finding itself in the way.
_HELD: dict[str, int] = {}


class RunLock:
    """Holds the work_dir and checkpoint folder locks from the start of `fit` to the end of the run
    (every process learns the outcome).

    The Trainer calls `hold` before it resumes or writes anything into the work_dir, so a refused
    second run changes nothing of the first, and `release` once the run's last checkpoint is in
    place. `--eval-only` of a checkpoint takes no lock: it may run beside the training run that
    writes them.
    """

    def __init__(self, work_dir: Path, accelerator: Accelerator, checkpoints: CheckpointManager) -> None:
        self.work_dir = Path(work_dir)
        self.accelerator = accelerator
        self.checkpoints = checkpoints
        self._paths: list[str] = []
        self._checked = False  # on every process, so all of them take part in the same broadcast

    def hold(self) -> None:
        """Take the lock (once per run); a RecipeError naming the holder when another run has it."""
        if self._checked:
            return
        self._checked = True
        error = [""]
        if self.accelerator.is_main_process:
            try:
                error[0] = self._acquire()
            except RecipeError as exc:  # a read-only or full folder: every process stops with this line
                error[0] = str(exc)
        if self.accelerator.num_processes > 1:
            broadcast_object_list(error)
        if error[0]:
            raise RecipeError(error[0])

    def release(self) -> None:
        for path in self._paths:
            fd = _HELD.pop(path, None)
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, 0)  # a run that ended is no holder for the next run to take over from
                os.close(fd)  # closing drops the flock
        self._paths, self._checked = [], False

    def _acquire(self) -> str:
        """'' when both are held; otherwise the one-line reason, or a RecipeError naming the lock that
        could not be written (and neither is held)."""
        folders = {
            "work_dir": (self.work_dir, "choose another --work-dir"),
            "checkpoint folder": (
                Path(self.checkpoints.root),
                "choose another checkpoint_config.out_dir or --work-dir",
            ),
        }
        for what, (folder, way_out) in folders.items():
            try:
                with writing(folder / LOCK):
                    error = self._lock(folder / LOCK, what, way_out)
            except BaseException:
                self.release()
                raise
            if error:
                self.release()
                return error
        for stale in self.checkpoints.remove_stale_temporaries():
            logger.warning("removed %s, a checkpoint left half-written by a process that is gone", stale)
        return ""

    def _lock(self, path: Path, what: str, way_out: str) -> str:
        key = str(path.resolve())
        if key in _HELD:
            if key not in self._paths:
                self._paths.append(key)
            return ""
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
        except OSError as e:
            if e.errno == errno.ELOOP:
                return f"{path}: is a symbolic link; the run lock must be a plain file (remove the link)"
            raise
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            return f"{path}: not a regular file; the run lock must be a plain file (remove it)"
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            other = f" with work_dir {holder['work_dir']}" if isinstance(holder.get("work_dir"), str) else ""
            return (
                f"{path}: {what} is in use by another run (pid {holder.get('pid', '?')} on "
                f"{holder.get('host', '?')}{other}); wait for it to end or {way_out}"
            )
        previous = _read_holder(fd)
        if previous.get("pid"):
            logger.warning(
                "%s: taking over the lock of run pid %s on %s, which is gone",
                path,
                previous["pid"],
                previous.get("host", "?"),
            )
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "work_dir": str(self.work_dir.resolve())}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(holder).encode(), 0)
        except OSError:
            os.close(fd)  # not held: a later run in this process must not find its own lock in the way
            raise
        _HELD[key] = fd
        self._paths.append(key)
        return ""


def _read_holder(fd: int) -> dict[str, Any]:
    try:
        holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (ValueError, RecursionError):
        return {}
    return holder if isinstance(holder, dict) else {}
