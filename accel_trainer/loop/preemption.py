"""Preemption: SIGTERM, SIGINT or SIGUSR1 end the run after the current optimizer step, with a checkpoint of it.

Clusters warn before they kill: SLURM sends SIGTERM (or the signal asked for with
`--signal=B:USR1@120`), Kubernetes SIGTERM then SIGKILL after terminationGracePeriodSeconds. The
handler only records the signal; the processes agree on it in the step vote of `step_guard.py`,
so every process stops after the same step and none waits in a collective the others skip.

A stop must come even when the step cannot end: a read that blocks (a FIFO among the images)
never returns to the step boundary. The same signal a second time ends the process at once, and
once a signal is recorded a watchdog ends it when the loop makes no progress (no stage of it
starts, no checkpoint is being written) for `ACCEL_TRAINER_STOP_TIMEOUT` seconds (60; 0: never).
A second SIGTERM or SIGUSR1 within 2 s of the first is the same one delivered twice (a
scheduler signals every process of the job, and the launcher passes its own copy on).

Launchers read a process's exit code as a failure: `accelerate launch` raises CalledProcessError
(exit 1) for any non-zero code of its one process, torchrun restarts the group (`--max_restarts`)
or raises ChildFailedError (exit 1); both end with 128 + N only for a signal they get themselves.
So a process that such a launcher started passes the stop on to it once its checkpoint is in
place (SIGINT as SIGINT; SIGTERM and SIGUSR1 as SIGTERM, which both launchers handle).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any

import psutil

from ..errors import RecipeError

SIGNALS: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)
TIMEOUT_ENV = "ACCEL_TRAINER_STOP_TIMEOUT"
DEFAULT_TIMEOUT_S = 60.0
SAME_SIGNAL_S = 2.0  # a repeat of SIGTERM / SIGUSR1 closer than this is one signal delivered twice
# How the launchers that run this package are started: `accelerate launch`, `python -m
# accelerate.commands.launch`, `accelerate-launch`, torchrun, `python -m torch.distributed.run`.
LAUNCHER_SCRIPTS = ("accelerate-launch", "torchrun")
LAUNCHER_MODULES = ("accelerate.commands.launch", "torch.distributed.run", "torch.distributed.launch")


class Preemption:
    """Records the first stop signal; the same one again, or a stop that cannot reach a step boundary, exits at once.

    `busy`: whether a checkpoint is being written (progress for the watchdog). The loop calls
    `progress` at every stage and `boundary_reached` when it acts on the signal.
    """

    def __init__(self, busy: Callable[[], bool] = lambda: False) -> None:
        self.signum = 0
        self.timeout = DEFAULT_TIMEOUT_S
        self._busy = busy
        self._previous: dict[int, Any] = {}
        self._first_at = self._progress_at = 0.0
        self._done = threading.Event()

    @property
    def installed(self) -> bool:
        return bool(self._previous)

    def install(self) -> None:
        """Catch the stop signals (only the main thread may; elsewhere, e.g. a notebook worker thread, nothing changes)."""
        if threading.current_thread() is not threading.main_thread() or self._previous:
            return
        self.timeout = stop_timeout()
        for sig in SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        if self.timeout > 0:
            self._done = threading.Event()
            threading.Thread(target=self._watch, args=(self._done,), name="stop-watchdog", daemon=True).start()

    def uninstall(self) -> None:
        self._done.set()
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()

    def progress(self) -> None:
        self._progress_at = time.monotonic()

    def boundary_reached(self) -> None:
        """The loop acts on the signal: the watchdog's work is done."""
        self._done.set()

    def hand_over(self) -> int:
        """The stop's checkpoint is in place: the pid of the launcher that started this process, or 0.

        With a launcher, the stop signals are ignored from now on (the launcher sends its own while
        this process exits, see `pass_on`); without one, the previous handlers come back.
        """
        launcher = launcher_pid()
        if launcher:
            self._done.set()
            self._previous.clear()
            for sig in SIGNALS:
                signal.signal(sig, signal.SIG_IGN)
        else:
            self.uninstall()
        return launcher

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        now = time.monotonic()
        if not self.signum:
            self.signum, self._first_at = signum, now
            self.progress()
        elif signum == self.signum and (signum == signal.SIGINT or now - self._first_at >= SAME_SIGNAL_S):
            exit_now(signum, f"second {signal.Signals(signum).name}: exiting now, without a checkpoint of this step")

    def _watch(self, done: threading.Event) -> None:
        while not done.wait(min(1.0, self.timeout / 4)):
            if not self.signum:
                continue
            if self._busy():
                self.progress()
            elif time.monotonic() - self._progress_at >= self.timeout:
                exit_now(
                    self.signum,
                    f"{signal.Signals(self.signum).name}: the run has made no progress for {self.timeout:g} s "
                    f"since it (a read that blocks?): exiting now, without a checkpoint of this step "
                    f"({TIMEOUT_ENV} sets the wait)",
                )


def stop_timeout() -> float:
    """Seconds the watchdog waits for progress after a stop signal (0: for ever)."""
    text = os.environ.get(TIMEOUT_ENV, "").strip()
    if not text:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise RecipeError(f"{TIMEOUT_ENV}={text!r}: expected seconds, a number >= 0 (0: wait for ever)")
    return value


def exit_now(signum: int, why: str) -> None:
    """End the process with 128 + `signum` at once, saying why (a checkpoint being written stays a tmp folder)."""
    os.write(2, f"accel-trainer: {why}\n".encode())
    launcher = launcher_pid()
    if launcher:
        pass_on(launcher, signum)
    os._exit(128 + signum)


def is_launcher(cmdline: Sequence[str]) -> bool:
    """Whether a command line is `accelerate launch` or torchrun, however started."""
    for i, arg in enumerate(cmdline[:3]):
        name = os.path.basename(arg)
        if (
            name in LAUNCHER_SCRIPTS
            or arg in LAUNCHER_MODULES
            or (name == "accelerate" and cmdline[i + 1 : i + 2] == ["launch"])
        ):
            return True
    return False


def launcher_pid() -> int:
    """The pid of the launcher that started this process (its parent), or 0."""
    try:
        parent = psutil.Process().parent()
        return parent.pid if parent is not None and is_launcher(parent.cmdline()) else 0
    except psutil.Error:
        return 0


def pass_on(launcher: int, signum: int) -> None:
    """Send the launcher the stop, so that it ends with 128 + N instead of failing or restarting the group."""
    with contextlib.suppress(OSError):  # it is gone already
        os.kill(launcher, signal.SIGINT if signum == signal.SIGINT else signal.SIGTERM)
