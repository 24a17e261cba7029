"""Sets lr and momentum before every iteration from the closed-form schedules (mmcv's updaters)."""

from __future__ import annotations

import logging

from ..schedules import LrSchedule, MomentumSchedule, apply_schedules
from .base import PRIORITIES, Hook, TrainerView

logger = logging.getLogger(__name__)


class ScheduleHook(Hook):
    """Computes the values from the trainer's counters, so resume needs no scheduler state."""

    priority = PRIORITIES["VERY_HIGH"]

    def __init__(self, lr_config: dict | None, momentum_config: dict | None, *, iter_based: bool = False) -> None:
        self.lr = LrSchedule.from_config(lr_config, iter_based=iter_based)
        self.momentum = MomentumSchedule.from_config(momentum_config)

    def before_run(self, trainer: TrainerView) -> None:
        warning = trainer.run.warmup_overrun(self.lr)
        if warning:
            logger.warning(warning)

    def before_train_iter(self, trainer: TrainerView) -> None:
        apply_schedules(trainer.optimizer, self.lr, self.momentum, trainer.run.progress(trainer.epoch, trainer.iter))
