"""Stops a run whose dataset has a different number of classes than the model's head, before it trains.

Always on (`build_hooks` adds it): a head with fewer outputs than the data's classes fails mid-run
on a label out of range, one with more trains silently on classes that never appear."""

from __future__ import annotations

from ..errors import RecipeError
from .base import PRIORITIES, Hook, TrainerView


class NumClassCheckHook(Hook):
    priority = PRIORITIES["VERY_HIGH"]

    def before_run(self, trainer: TrainerView) -> None:
        expected = trainer.recipe.model.num_classes
        for split, dataset in (("train", trainer.train_dataset), ("val", trainer.val_dataset)):
            found = trainer.task.num_dataset_classes(dataset)
            if found is not None and found != expected:
                raise RecipeError(
                    f"model.num_classes = {expected} but the {split} dataset has {found} classes "
                    f"({trainer.task.describe_data(split)}); set model.num_classes = {found}"
                )
