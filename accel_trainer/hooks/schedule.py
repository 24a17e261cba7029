"""Sets lr and momentum before every iteration from the closed-form schedules (mmcv's updaters)."""

from __future__ import annotations

import logging

from ..schedules import ScheduleSpec, apply_schedules
from .base import PRIORITIES, Hook, TrainerView

logger = logging.getLogger(__name__)


class ScheduleHook(Hook):
    """Computes the values from the trainer's counters, so resume needs no scheduler state; the
    schedules were parsed when the recipe was loaded (`ScheduleSpec`)."""

    priority = PRIORITIES["VERY_HIGH"]

    def __init__(self, spec: ScheduleSpec) -> None:
        self.spec = spec
        self.checked = False

    def before_train_epoch(self, trainer: TrainerView) -> None:
        # When training starts, not in before_run: an evaluation (--eval-only) runs no schedule.
        if self.checked:
            return
        self.checked = True
        warning = trainer.run.warmup_overrun(self.spec.lr)
        if warning:
            logger.warning(warning)

    def before_train_iter(self, trainer: TrainerView) -> None:
        spec, progress = self.spec, trainer.run.progress(trainer.epoch, trainer.iter)
        apply_schedules(trainer.optimizer, spec.lr, spec.momentum, progress)
