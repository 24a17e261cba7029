"""Sets lr and momentum before every iteration from the closed-form schedules (mmcv's updaters)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..schedules import LrSchedule, MomentumSchedule, Progress, apply_schedules
from .base import PRIORITIES, Hook

if TYPE_CHECKING:
    from ..trainer import Trainer


class ScheduleHook(Hook):
    """Computes the values from the trainer's counters, so resume needs no scheduler state."""

    priority = PRIORITIES["VERY_HIGH"]

    def __init__(self, lr_config: dict | None, momentum_config: dict | None, *, iter_based: bool = False) -> None:
        self.lr = LrSchedule.from_config(lr_config, iter_based=iter_based)
        self.momentum = MomentumSchedule.from_config(momentum_config)

    def before_train_iter(self, trainer: "Trainer") -> None:
        progress = Progress(
            epoch=trainer.epoch,
            iter=trainer.iter,
            iters_per_epoch=trainer.iters_per_epoch,
            max_epochs=trainer.max_epochs,
            max_iters=trainer.max_iters,
        )
        apply_schedules(trainer.optimizer, self.lr, self.momentum, progress)
