"""The sections about how training runs: its length (`[runner]`), gradient clipping, the lr scaling
rule, a frozen first stage, the weights' moving average and what a non-finite step does."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from ..errors import RecipeError
from .checks import between, positive, require

# Far beyond any real run, and small enough that the per-epoch tables of a run's length stay small.
MAX_EPOCHS = 100_000
MAX_ITERS = 10_000_000


@dataclass
class RunnerCfg:
    type: Literal["EpochBasedRunner", "IterBasedRunner"] = "EpochBasedRunner"
    max_epochs: int = 0
    max_iters: int = 0

    def check(self, path: str) -> None:
        if self.type == "EpochBasedRunner":
            positive(self.max_epochs, f"{path}.max_epochs")
            between(self.max_epochs, f"{path}.max_epochs", 1, MAX_EPOCHS)
            if self.max_iters:
                raise RecipeError(f"{path}.max_iters is for IterBasedRunner; EpochBasedRunner takes {path}.max_epochs")
        else:
            positive(self.max_iters, f"{path}.max_iters")
            between(self.max_iters, f"{path}.max_iters", 1, MAX_ITERS)
            if self.max_epochs:
                raise RecipeError(f"{path}.max_epochs is for EpochBasedRunner; IterBasedRunner takes {path}.max_iters")


@dataclass
class GradClipCfg:
    """Gradient clipping by total norm (mmcv's `grad_clip = dict(max_norm=35, norm_type=2)`)."""

    max_norm: int | float
    norm_type: int | float = 2

    def check(self, path: str) -> None:
        require(
            math.isfinite(self.max_norm) and self.max_norm > 0,
            f"{path}.max_norm",
            self.max_norm,
            "must be a finite number > 0, e.g. 35",
        )
        require(self.norm_type > 0, f"{path}.norm_type", self.norm_type, "must be > 0 (2 for the L2 norm, inf for max)")


@dataclass
class OptimizerCfg:
    grad_clip: GradClipCfg | None = None


@dataclass
class AutoScaleLrCfg:
    enable: bool = False
    base_batch_size: int = 16

    def check(self, path: str) -> None:
        positive(self.base_batch_size, f"{path}.base_batch_size")


@dataclass
class FreezeCfg:
    """Two-stage training (the YOLO-style Freeze_Train): `modules` frozen for epochs [0, epochs)."""

    modules: list[str] = field(default_factory=list)
    epochs: int = 0
    batch_size: int = 0

    def check(self, path: str) -> None:
        positive(self.epochs, f"{path}.epochs", allow_zero=True)
        positive(self.batch_size, f"{path}.batch_size", allow_zero=True)
        if self.epochs and not self.modules:
            raise RecipeError(f'{path}.epochs is set but {path}.modules is empty; e.g. modules = ["backbone"]')


@dataclass
class EmaCfg:
    """An exponential moving average of the weights (timm ModelEmaV3), see `hooks/ema.py`."""

    enable: bool = False
    decay: float = 0.9998
    warmup: bool = True  # timm's decay warmup over optimizer steps: min(decay, 1 - (1 + step) ** -2/3)
    update_interval: int = 1  # optimizer steps between updates
    eval: bool = True  # val metrics are the EMA's; the raw model's come as raw_<key>

    def check(self, path: str) -> None:
        require(0.0 < self.decay < 1.0, f"{path}.decay", self.decay, "must be between 0 and 1 (exclusive), e.g. 0.9998")
        positive(self.update_interval, f"{path}.update_interval")


@dataclass
class NanGuardCfg:
    """What a non-finite loss or gradient does (checked every optimizer step, see `step_guard.py`)."""

    action: Literal["stop", "skip", "rollback"] = "stop"
    max_skips: int = 3  # skip: non-finite steps in a row before stopping; rollback: rollbacks per run
    rollback_lr_factor: float = 0.5  # rollback: lr multiplier applied after each rollback

    def check(self, path: str) -> None:
        positive(self.max_skips, f"{path}.max_skips")
        require(
            0.0 < self.rollback_lr_factor <= 1.0,
            f"{path}.rollback_lr_factor",
            self.rollback_lr_factor,
            "must be in (0, 1], e.g. 0.5",
        )
