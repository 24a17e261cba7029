"""The best checkpoint by a val metric (mmcv EvalHook's save_best); the checkpoint manager writes it."""

from __future__ import annotations

import math

from ..errors import RecipeError
from .base import PRIORITIES, Hook, TrainerView

# mmcv 1.x's defaults for inferring whether a bigger metric is better.
GREATER_KEYS = ("acc", "top", "AR@", "auc", "precision", "mAP", "mDice", "mIoU", "mAcc", "aAcc")
LESS_KEYS = ("loss",)


def infer_rule(key: str, greater_keys: list[str], less_keys: list[str]) -> str:
    """'greater' or 'less' for a metric name, matched case-insensitively as mmcv does."""
    key_lc = key.lower()
    greater = [k.lower() for k in (*GREATER_KEYS, *greater_keys)]
    less = [k.lower() for k in (*LESS_KEYS, *less_keys)]
    if key_lc in greater:
        return "greater"
    if key_lc in less:
        return "less"
    if any(k in key_lc for k in greater):
        return "greater"
    if any(k in key_lc for k in less):
        return "less"
    raise RecipeError(f"evaluation.save_best = {key!r}: cannot tell whether bigger is better; set evaluation.rule")


class SaveBestHook(Hook):
    """Decides whether a val result is the best so far; the checkpoint manager writes `best_<metric>_epoch_N`."""

    priority = PRIORITIES["LOW"]

    def __init__(self, key: str, rule: str, greater_keys: list[str], less_keys: list[str]):
        self.key = key
        self.rule = rule
        self.greater_keys = greater_keys
        self.less_keys = less_keys

    def before_run(self, trainer: TrainerView) -> None:
        if self.key == "auto":
            self.key = trainer.task.metric_keys[0]
        self.rule = self.rule or infer_rule(self.key, self.greater_keys, self.less_keys)

    def _better(self, value: float, best: float | None) -> bool:
        if best is None or math.isnan(best):
            return not math.isnan(value)
        return value > best if self.rule == "greater" else value < best

    def after_val_epoch(self, trainer: TrainerView) -> None:
        if self.key not in trainer.val_results:
            raise RecipeError(
                f"evaluation.save_best = {self.key!r} is not a val metric; the val results have: "
                f"{', '.join(k for k in trainer.val_results if k != 'num_samples')}"
            )
        if not trainer.iter:
            return
        value = float(trainer.val_results[self.key])
        if self._better(value, trainer.checkpoints.best.get("value")):
            trainer.checkpoints.save_best(self.key, value)
