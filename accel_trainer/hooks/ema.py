"""An exponential moving average of the weights (timm's ModelEmaV3): updated, evaluated, checkpointed.

The EMA follows the unwrapped model and is updated after every `update_interval`-th optimizer
step (never per micro-batch). It averages buffers too, so the EMA copy's BatchNorm statistics are
its own. Under DDP every process keeps a copy; each process updates its BatchNorm statistics from
its own batches, so before an update the model's floating-point buffers are taken from process 0
(what DDP does at the next forward anyway), which keeps the copies identical.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import nn

from ..checkpoint.weights import fit_weights
from .base import PRIORITIES, Hook, TrainerView

if TYPE_CHECKING:
    from timm.utils.model_ema import ModelEmaV3


logger = logging.getLogger(__name__)

EMA_STEM = "ema"  # the checkpoint file ema.safetensors
RAW_PREFIX = "raw_"


def share_float_buffers(model: nn.Module, src: int = 0) -> None:
    """Overwrite every process's floating-point buffers with those of process `src` (one broadcast)."""
    buffers = [b for b in model.buffers() if b.is_floating_point()]
    if not buffers:
        return
    flat = torch.cat([b.reshape(-1) for b in buffers])
    dist.broadcast(flat, src)
    for buffer, values in zip(buffers, flat.split([b.numel() for b in buffers])):
        buffer.copy_(values.view_as(buffer))


class EMAHook(Hook):
    """Keeps the EMA; with `evaluate`, val results are the EMA's and the raw model's come as `raw_*`.

    Priority ABOVE_NORMAL: the EMA is updated before the loop saves the step's checkpoint (NORMAL)
    and the val results are complete before save_best and the loggers read them (LOW, VERY_LOW).
    A checkpoint part: `ema.safetensors`.
    """

    priority = PRIORITIES["ABOVE_NORMAL"]
    state_name = EMA_STEM

    def __init__(
        self, decay: float = 0.9998, warmup: bool = True, update_interval: int = 1, evaluate: bool = True
    ) -> None:
        self.decay = decay
        self.warmup = warmup
        self.update_interval = update_interval
        self.evaluate = evaluate
        self.ema: ModelEmaV3 | None = None
        self._resumed: dict[str, torch.Tensor] = {}  # a resume's EMA weights, until the EMA starts

    def model_ema(self, trainer: TrainerView) -> ModelEmaV3:
        """The EMA; the first call starts it as a copy of the current weights, on the model's device
        (then takes a resumed checkpoint's EMA weights, if any)."""
        if self.ema is None:
            from timm.utils.model_ema import (
                ModelEmaV3,  # here, not at import: checking a recipe needs no timm model zoo
            )

            self.ema = ModelEmaV3(trainer.unwrapped_model, decay=self.decay, use_warmup=self.warmup)
            if self._resumed:
                self.ema.module.load_state_dict(self._resumed)
                self._resumed = {}
        return self.ema

    def before_run(self, trainer: TrainerView) -> None:
        self.model_ema(trainer)

    @torch.no_grad()
    def after_train_iter(self, trainer: TrainerView) -> None:
        if not self.every_n_iters(trainer, self.update_interval):
            return
        model = trainer.unwrapped_model
        if trainer.accelerator.num_processes > 1:
            share_float_buffers(model)
        # The warmup counts optimizer steps (trainer.iter, restored on resume); without it the decay is constant.
        self.model_ema(trainer).update(model, step=trainer.iter if self.warmup else None)

    def after_val_epoch(self, trainer: TrainerView) -> None:
        if not self.evaluate:
            return
        raw = trainer.val_results
        logger.info("evaluating the EMA weights")
        results: dict[str, Any] = trainer.val_pass(self.model_ema(trainer).module)
        results.update({RAW_PREFIX + k: v for k, v in raw.items() if k != "num_samples"})
        trainer.val_results = results

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The EMA weights (before the EMA starts: those a resume handed over, if any)."""
        return self.ema.module.state_dict() if self.ema is not None else dict(self._resumed)

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Resume the EMA; a resume runs before `before_run` starts it, so the weights may wait for that."""
        if not state:
            logger.warning("the checkpoint has no %s.safetensors; the EMA restarts from the resumed weights", EMA_STEM)
            self.ema, self._resumed = None, {}  # started again, as a copy of the resumed weights, at its next use
        elif self.ema is None:
            self._resumed = dict(state)
        else:
            self.ema.module.load_state_dict(state)


def evaluate_ema_weights(trainer: TrainerView, tensors: dict[str, torch.Tensor] | None, source: str = "") -> None:
    """For --eval-only: evaluate `tensors` (from `source`) as the EMA and the model's weights as `raw_*`.

    The hook is added when the recipe has none, so a checkpoint's EMA is evaluated whatever `[ema]`
    says; without EMA tensors (None) only the model's weights are evaluated.
    """
    hook = next((h for h in trainer.hooks if isinstance(h, EMAHook)), None)
    if tensors is None:
        if hook is not None:
            logger.warning("no EMA weights to evaluate; evaluating the model's weights only")
            hook.evaluate = False
        return
    if hook is None:
        hook = EMAHook()
        trainer.register_hook(hook)
    hook.evaluate = True
    opts = trainer.recipe.load_options
    fit_weights(
        hook.model_ema(trainer).module,
        tensors,
        source=f"{source} ({EMA_STEM})",
        revise_keys=opts.key_renames,
        strict=opts.strict,
    )
