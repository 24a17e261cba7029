"""Preemption: SIGTERM, SIGINT or SIGUSR1 end the run after the current optimizer step, with a checkpoint of it.

Clusters warn before they kill: SLURM sends SIGTERM (or the signal asked for with
`--signal=B:USR1@120`), Kubernetes SIGTERM then SIGKILL after terminationGracePeriodSeconds. The
handler only records the signal; the processes agree on it in the step vote of `step_guard.py`,
so every process stops after the same step and none waits in a collective the others skip.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..checkpoint.manager import CheckpointManager

logger = logging.getLogger(__name__)

SIGNALS: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)


class Preemption:
    """Records the first stop signal; a second SIGINT exits at once (a checkpoint being written stays a tmp folder)."""

    def __init__(self) -> None:
        self.signum = 0
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        """Catch the stop signals (only the main thread may; elsewhere, e.g. a notebook worker thread, nothing changes)."""
        if threading.current_thread() is not threading.main_thread() or self._previous:
            return
        for sig in SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)

    def uninstall(self) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum and signum == signal.SIGINT:
            os.write(2, b"accel-trainer: second interrupt: exiting now, without a checkpoint\n")
            os._exit(128 + signum)
        if not self.signum:
            self.signum = signum

    def stop(self, checkpoints: CheckpointManager, signum: int) -> None:
        """Write the checkpoint of this exact step, move `latest` to it and exit with 128 + the signal number."""
        path = checkpoints.save_step()
        # A process that got no signal itself exits as the one that did.
        code = 128 + (self.signum or signum)
        logger.warning(
            "preempted at epoch %d, iter %d by %s: saved %s; continue with --resume auto",
            checkpoints.train_state.epoch,
            checkpoints.train_state.iter,
            signal.Signals(self.signum or signum).name,
            path,
        )
        self.uninstall()
        raise SystemExit(code)
