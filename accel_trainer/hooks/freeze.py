"""Two-stage training: some modules frozen for the first epochs, then everything trains.

While frozen, the modules' parameters have `requires_grad=False` (they stay in the optimizer,
so they train again after the boundary) and their norm layers stay in eval mode. At the
boundary the train loader is rebuilt with the stage's batch size and, with `auto_scale_lr`,
the lr follows the batch size. The stage is a function of `trainer.epoch`, so a resumed run
lands in the right stage.
"""

from __future__ import annotations

import logging

from torch import nn
from torch.nn.modules.batchnorm import _NormBase

from ..errors import RecipeError
from ..schedules import rescale_initial_lr
from .base import PRIORITIES, Hook, TrainerView

logger = logging.getLogger(__name__)


def _backbone_alias(model: nn.Module) -> list[str] | None:
    """For a timm classifier without a `backbone` attribute: every top-level module but the head."""
    if hasattr(model, "backbone") or not hasattr(model, "get_classifier"):
        return None
    head = model.get_classifier()
    return [name for name, child in model.named_children() if child is not head]


def resolve_modules(model: nn.Module, prefixes: list[str]) -> dict[str, nn.Module]:
    """Map name prefixes to modules; "backbone" on a timm classifier means all but its head."""
    named = dict(model.named_modules())
    out: dict[str, nn.Module] = {}
    for prefix in prefixes:
        names = [prefix] if prefix != "backbone" else (_backbone_alias(model) or ["backbone"])
        for name in names:
            if name not in named:
                top = sorted(n for n, _ in model.named_children())
                raise RecipeError(
                    f"freeze.modules: the model has no module {name!r}; its top-level modules: {', '.join(top)}"
                )
            out[name] = named[name]
    return out


class FreezeHook(Hook):
    priority = PRIORITIES["VERY_HIGH"]

    def __init__(self, modules: list[str], epochs: int, batch_size: int) -> None:
        self.prefixes = modules
        self.epochs = epochs
        self.batch_size = batch_size
        self.frozen: bool | None = None
        self.modules: dict[str, nn.Module] = {}

    def before_run(self, trainer: TrainerView) -> None:
        self.modules = resolve_modules(trainer.unwrapped_model, self.prefixes)
        self.full_batch_size = trainer.recipe.data.batch_size

    def before_train_epoch(self, trainer: TrainerView) -> None:
        frozen = trainer.epoch < self.epochs
        if frozen != self.frozen:
            self._set_stage(trainer, frozen)

    def _set_stage(self, trainer: TrainerView, frozen: bool) -> None:
        self.frozen = frozen
        for module in self.modules.values():
            module.requires_grad_(not frozen)
        old_bs = trainer.train_batch_size
        new_bs = (self.batch_size or self.full_batch_size) if frozen else self.full_batch_size
        if new_bs != old_bs:
            trainer.train_loader = trainer.build_train_loader(new_bs)
            if trainer.recipe.auto_scale_lr.enable:
                rescale_initial_lr(trainer.optimizer.param_groups, old_bs, new_bs)
        trainer.set_train_mode()
        logger.info(
            "freeze: from epoch %d %s %s, batch size %d per process",
            trainer.epoch + 1,
            ", ".join(self.modules),
            "frozen" if frozen else "trainable again",
            new_bs,
        )

    def adjust_train_mode(self, trainer: TrainerView) -> None:
        """Keep the frozen modules' norm layers in eval mode (running stats untouched)."""
        if self.frozen:
            for module in self.modules.values():
                for m in module.modules():
                    if isinstance(m, (_NormBase, nn.GroupNorm, nn.LayerNorm)):
                        m.eval()
