"""One vote per optimizer step: are this step's loss and gradients finite, and did a stop signal arrive?

Each process contributes local flags (a non-finite loss in any of the step's micro-batches, a
non-finite gradient norm, the signals it caught); one `accelerator.reduce` sums them, so every
process takes the same decision at the same step and no rank blocks in a collective the others
skip. Reading the result is the step's one host synchronisation (a tensor of 4 numbers).

Non-finite steps follow `[nan_guard] action`: "stop" exits naming the iteration and each loss
term; "skip" leaves the step unapplied (the iteration still counts, so the schedule and the data
order stay those of the recipe) and stops after `max_skips` in a row; "rollback" reloads the
newest resumable checkpoint and multiplies the lr by `rollback_lr_factor`, at most `max_skips`
times. Under fp16 the grad scaler's own overflow skip is left alone: only the loss is checked there.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import torch

from ..errors import RecipeError
from ..preemption import SIGNALS, Preemption
from ..recipe.training_sections import NanGuardCfg
from .base import PRIORITIES, Hook

if TYPE_CHECKING:
    from ..trainer import Trainer

logger = logging.getLogger(__name__)

STEM = "nan_guard"


class NonFiniteError(RecipeError):
    """Training produced a non-finite loss or gradient and the recipe says to stop."""


class StepGuard(Hook):
    """The per-step vote and what follows from it; the trainer calls `allows_step` and `after_step`."""

    # After the schedule (VERY_HIGH) has set this iteration's lr, so the rollback factor applies on top.
    priority = PRIORITIES["HIGH"]

    def __init__(self, cfg: NanGuardCfg) -> None:
        self.cfg = cfg
        self.preemption = Preemption()
        self.lr_factor = 1.0
        self.rollbacks = 0
        self.skips_in_a_row = 0
        self._bad_loss: torch.Tensor | None = None
        self._verdict: tuple[bool, int] = (False, 0)  # (non-finite, agreed signal) of the last step
        self._terms = ""

    # ----------------------------------------------------------------- hook stages

    def before_train_epoch(self, trainer: Trainer) -> None:
        self.preemption.install()  # training only: --eval-only keeps the default signal behaviour

    def after_run(self, trainer: Trainer) -> None:
        self.preemption.uninstall()

    def before_train_iter(self, trainer: Trainer) -> None:
        if self.lr_factor != 1.0:
            for group in trainer.optimizer.param_groups:
                group["lr"] *= self.lr_factor

    def checkpoint_tensors(self, trainer: Trainer) -> dict[str, dict[str, torch.Tensor]]:
        if self.lr_factor == 1.0 and not self.rollbacks:
            return {}
        return {
            STEM: {
                "lr_factor": torch.tensor([self.lr_factor], dtype=torch.float64),
                "rollbacks": torch.tensor([self.rollbacks], dtype=torch.int64),
            }
        }

    def load_checkpoint_tensors(self, trainer: Trainer, tensors: dict[str, dict[str, torch.Tensor]]) -> None:
        state = tensors.get(STEM)
        self.lr_factor = float(state["lr_factor"][0]) if state else 1.0
        self.rollbacks = int(state["rollbacks"][0]) if state else 0

    # ----------------------------------------------------------------- the vote

    def allows_step(self, trainer: Trainer, loss: torch.Tensor, outputs: dict[str, Any]) -> bool:
        """Called for every micro-batch before `optimizer.step()`; on the last one of a step, votes."""
        bad = ~torch.isfinite(loss.detach())
        self._bad_loss = bad if self._bad_loss is None else self._bad_loss | bad
        accelerator = trainer.accelerator
        if not accelerator.sync_gradients:
            return True
        bad_grad = torch.zeros((), dtype=torch.bool, device=bad.device)
        if accelerator.scaler is None:  # a scaled fp16 step with inf gradients is the scaler's business
            norm = outputs.get("grad_norm")
            if norm is None:
                grads = [p.grad for p in trainer.model.parameters() if p.grad is not None]
                norm = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros(())
            bad_grad = ~torch.isfinite(torch.as_tensor(norm, device=bad.device))
        local = torch.zeros(2 + len(SIGNALS), dtype=torch.float32, device=accelerator.device)
        local[0], local[1] = self._bad_loss.float(), bad_grad.float()
        if self.preemption.signum:
            local[2 + SIGNALS.index(self.preemption.signum)] = 1.0
        self._bad_loss = None
        votes = accelerator.reduce(local, reduction="sum").tolist()
        signum = next((int(s) for s, v in zip(SIGNALS, votes[2:]) if v), 0)
        nonfinite = bool(votes[0] or votes[1])
        self._verdict = (nonfinite, signum)
        if not nonfinite:
            self.skips_in_a_row = 0
            return True
        self._terms = ", ".join(
            [f"{k}={float(v):.4g}" for k, v in outputs.items() if torch.is_tensor(v) and v.numel() == 1]
            + [f"gradient norm not finite on {int(votes[1])} process(es)"] * bool(votes[1])
        )
        where = f"iteration {trainer.iter + 1} (epoch {trainer.epoch + 1})"
        if self.cfg.action == "stop":
            raise NonFiniteError(
                f"non-finite loss or gradient at {where}: {self._terms}; stopping "
                '(nan_guard.action = "stop"; "skip" or "rollback" continue instead)'
            )
        self.skips_in_a_row += 1
        if self.cfg.action == "skip":
            if self.skips_in_a_row > self.cfg.max_skips:
                raise NonFiniteError(
                    f"non-finite loss or gradient at {where}: {self._terms}; "
                    f"{self.skips_in_a_row} steps in a row, more than nan_guard.max_skips = {self.cfg.max_skips}"
                )
            logger.warning(
                "nan_guard: skipped %s, not applied (%s); %d in a row", where, self._terms, self.skips_in_a_row
            )
        return False

    def after_step(self, trainer: Trainer) -> bool:
        """After the step's hooks: stop for a signal, or roll back. True: the epoch's batches are void."""
        nonfinite, signum = self._verdict
        self._verdict = (False, 0)
        if signum:
            self.preemption.stop(trainer, signum)
        if nonfinite and self.cfg.action == "rollback":
            self._rollback(trainer)
            return True
        return False

    def _rollback(self, trainer: Trainer) -> None:
        where = f"iteration {trainer.iter} (epoch {trainer.epoch + 1})"
        if self.rollbacks >= self.cfg.max_skips:
            raise NonFiniteError(
                f"non-finite loss or gradient at {where}: {self._terms}; already rolled back "
                f"{self.rollbacks} times (nan_guard.max_skips = {self.cfg.max_skips})"
            )
        path = trainer.checkpointer.find_resumable()
        if path is None:
            raise NonFiniteError(
                f"non-finite loss or gradient at {where}: {self._terms}; no resumable checkpoint "
                f"under {trainer.checkpointer.root} to roll back to"
            )
        factor, rollbacks = self.lr_factor * self.cfg.rollback_lr_factor, self.rollbacks + 1
        trainer.checkpointer.resume(path)
        self.lr_factor, self.rollbacks = factor, rollbacks
        logger.warning(
            "nan_guard: non-finite at %s (%s): rolled back to %s, lr x %g from now on (rollback %d of %d)",
            where,
            self._terms,
            path.name,
            factor,
            rollbacks,
            self.cfg.max_skips,
        )
