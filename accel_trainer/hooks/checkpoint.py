"""Checkpoints on a schedule (mmcv's CheckpointHook) and the best one by a val metric (EvalHook's save_best)."""
from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

from ..checkpoint import remove_old_checkpoints
from ..errors import RecipeError
from .base import PRIORITIES, Hook

if TYPE_CHECKING:
    from ..trainer import Trainer

logger = logging.getLogger(__name__)

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


class CheckpointHook(Hook):
    """Saves `epoch_N` / `iter_N` every `interval`, and the last one with `save_last`."""

    priority = PRIORITIES["NORMAL"]

    def __init__(self, interval: int, by_epoch: bool, save_optimizer: bool, max_keep_ckpts: int, save_last: bool):
        self.interval = interval
        self.by_epoch = by_epoch
        self.save_optimizer = save_optimizer
        self.max_keep_ckpts = max_keep_ckpts
        self.save_last = save_last

    def after_train_epoch(self, trainer: "Trainer") -> None:
        last = self.save_last and trainer.epoch == trainer.max_epochs
        if self.by_epoch and (self.every_n_epochs(trainer, self.interval) or last):
            self._save(trainer, f"epoch_{trainer.epoch}")

    def after_train_iter(self, trainer: "Trainer") -> None:
        last = self.save_last and trainer.iter == trainer.max_iters
        if not self.by_epoch and (self.every_n_iters(trainer, self.interval) or last):
            self._save(trainer, f"iter_{trainer.iter}")

    def _save(self, trainer: "Trainer", name: str) -> None:
        trainer.save_checkpoint(name, save_optimizer=self.save_optimizer)
        if trainer.accelerator.is_main_process and self.max_keep_ckpts > 0:
            prefix = "epoch" if self.by_epoch else "iter"
            remove_old_checkpoints(trainer.ckpt_root, prefix, self.max_keep_ckpts, protect=trainer.protected_checkpoints())
        trainer.accelerator.wait_for_everyone()


class SaveBestHook(Hook):
    """Keeps `best_<metric>_epoch_N` (or `_iter_N`) for the best val result, removing the previous best."""

    priority = PRIORITIES["LOW"]

    def __init__(self, key: str, rule: str, greater_keys: list[str], less_keys: list[str]):
        self.key = key
        self.rule = rule
        self.greater_keys = greater_keys
        self.less_keys = less_keys

    def before_run(self, trainer: "Trainer") -> None:
        if self.key == "auto":
            self.key = trainer.task.metric_keys[0]
        self.rule = self.rule or infer_rule(self.key, self.greater_keys, self.less_keys)

    def _better(self, value: float, best: float | None) -> bool:
        if best is None or math.isnan(best):
            return not math.isnan(value)
        return value > best if self.rule == "greater" else value < best

    def after_val_epoch(self, trainer: "Trainer") -> None:
        if self.key not in trainer.val_results:
            raise RecipeError(
                f"evaluation.save_best = {self.key!r} is not a val metric; the val results have: "
                f"{', '.join(k for k in trainer.val_results if k != 'num_samples')}"
            )
        if not trainer.iter:
            return
        value = float(trainer.val_results[self.key])
        best: dict[str, Any] = trainer.best
        if not self._better(value, best.get("value")):
            return
        where = f"epoch_{trainer.epoch}" if trainer.by_epoch else f"iter_{trainer.iter}"
        previous = best.get("name")
        trainer.best = {"key": self.key, "value": value, "name": f"best_{self.key}_{where}"}
        trainer.save_checkpoint(trainer.best["name"], save_optimizer=False, update_latest=False)
        if trainer.accelerator.is_main_process:
            if previous and previous != trainer.best["name"]:
                remove_old_checkpoints(trainer.ckpt_root, previous, 0, protect=set(), exact=True)
            logger.info("best %s = %.4f so far: saved %s", self.key, value, trainer.best["name"])
        trainer.accelerator.wait_for_everyone()
