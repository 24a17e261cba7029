"""Progress bars of a run: training (epoch, iteration / total, ETA, smoothed loss) and evaluation
(images/s, ETA), drawn by the main process on a terminal (see `progress.py`).

The loss shown is the mean over the iterations since the bar's last refresh, read from the
device at most every `refresh` seconds: one host sync per refresh, none per iteration.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sized
from typing import TYPE_CHECKING

import torch

from ..progress import batch_size_of, log_above_bars, progress_bar
from .base import PRIORITIES, Hook, TrainerView

if TYPE_CHECKING:
    from tqdm import tqdm


class TrainProgressHook(Hook):
    """One bar per epoch (a single bar over `max_iters` for IterBasedRunner); console log lines
    are written above the bars for the whole run."""

    # First in `after_train_epoch`: the epoch's bar is closed before an evaluation opens its own.
    priority = PRIORITIES["HIGHEST"]

    def __init__(self, refresh: float = 0.5) -> None:
        self.refresh = refresh
        self.bar: tqdm | None = None
        self._losses: list[torch.Tensor] = []
        self._shown_at = 0.0
        self._redirect = contextlib.ExitStack()

    def before_run(self, trainer: TrainerView) -> None:
        self.enabled = trainer.accelerator.is_main_process
        self._redirect.enter_context(log_above_bars(self.enabled))

    def before_train_epoch(self, trainer: TrainerView) -> None:
        if trainer.by_epoch:
            self._close()
            # `resume_inner_iter` still holds the iterations a mid-epoch resume skips.
            self.bar = progress_bar(
                trainer.iters_per_epoch,
                f"Epoch {trainer.epoch + 1}/{trainer.max_epochs}",
                "it",
                self.enabled,
                initial=trainer.resume_inner_iter,
            )
        elif self.bar is None:
            self.bar = progress_bar(trainer.max_iters, "Iter", "it", self.enabled, initial=trainer.iter)

    def after_train_iter(self, trainer: TrainerView) -> None:
        if self.bar is None or self.bar.disable:
            return
        loss = trainer.outputs.get("loss") if isinstance(trainer.outputs, dict) else None
        if isinstance(loss, torch.Tensor):
            self._losses.append(loss.detach())
        now = time.monotonic()
        if self._losses and now - self._shown_at >= self.refresh:
            self._shown_at = now
            mean = torch.stack(self._losses).float().mean().item()
            self._losses.clear()
            self.bar.set_postfix(loss=f"{mean:.4f}", lr=f"{trainer.current_lr():.3e}", refresh=False)
        self.bar.update(1)

    def after_train_epoch(self, trainer: TrainerView) -> None:
        if trainer.by_epoch:
            self._close()

    def after_run(self, trainer: TrainerView) -> None:
        self._close()
        self._redirect.close()

    def _close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        self._losses.clear()


class ValProgressHook(Hook):
    """A bar per pass over the val set, in images across all processes; it stays until the
    metrics are computed (COCO evaluation can take minutes) and then goes."""

    # Last in `after_val_epoch`: a second pass of the stage (the EMA weights) gets its own bar.
    priority = PRIORITIES["LOWEST"]

    def __init__(self) -> None:
        self.bar: tqdm | None = None

    def before_run(self, trainer: TrainerView) -> None:
        self.enabled = trainer.accelerator.is_main_process
        dataset = trainer.val_dataset  # an iterable dataset may have no length: the bar then only counts
        self.total: int | None = len(dataset) if isinstance(dataset, Sized) else None

    def before_val_iter(self, trainer: TrainerView) -> None:
        if self.bar is None or (self.total is not None and self.bar.n >= self.total):
            self._close()
            self.bar = progress_bar(self.total, "val", "img", self.enabled, leave=False)

    def after_val_iter(self, trainer: TrainerView) -> None:
        if self.bar is None or self.bar.disable:
            return
        images = batch_size_of(trainer.batch) * trainer.accelerator.num_processes
        if self.total is not None:
            images = min(images, self.total - self.bar.n)  # the last batches of a DDP split repeat samples
        self.bar.update(images)
        if self.total is not None and self.bar.n >= self.total:
            self.bar.set_description("val: computing metrics")

    def after_val_epoch(self, trainer: TrainerView) -> None:
        self._close()

    def after_run(self, trainer: TrainerView) -> None:
        self._close()

    def _close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
