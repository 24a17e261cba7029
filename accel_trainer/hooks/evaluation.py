"""Evaluation between train epochs/iterations, for workflows without a "val" phase (mmcv's EvalHook)."""

from __future__ import annotations

from .base import PRIORITIES, Hook, TrainerView


class EvalHook(Hook):
    """Runs `trainer.validate()` every `interval` epochs (or iterations), from `start` on."""

    priority = PRIORITIES["LOW"]

    def __init__(self, interval: int = 1, start: int | None = None, by_epoch: bool = True) -> None:
        self.interval = interval
        self.start = start
        self.by_epoch = by_epoch

    def _due(self, progress: int) -> bool:
        if self.start is None:
            return progress % self.interval == 0
        return progress >= self.start and (progress - self.start) % self.interval == 0

    def after_train_epoch(self, trainer: TrainerView) -> None:
        if self.by_epoch and self._due(trainer.epoch):
            trainer.validate()

    def after_train_iter(self, trainer: TrainerView) -> None:
        if not self.by_epoch and self._due(trainer.iter):
            trainer.validate()
