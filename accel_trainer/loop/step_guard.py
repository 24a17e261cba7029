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
from ..recipe.training_sections import NanGuardCfg
from .preemption import SIGNALS, Preemption

if TYPE_CHECKING:
    from accelerate import Accelerator
    from torch import nn

    from ..checkpoint.manager import CheckpointManager
    from ..checkpoint.state import TrainState
    from ..recipe.training_sections import NanGuardCfg

logger = logging.getLogger(__name__)

STEM = "nan_guard"  # its checkpoint part: nan_guard.safetensors, only once the lr factor changed


class NonFiniteError(RecipeError):
    """Training produced a non-finite loss or gradient and the recipe says to stop."""


class StepGuard:
    """The per-step vote and what follows from it; a checkpoint part (the rollback lr factor and count).

    The loop installs `preemption` when an epoch starts, calls `scale_lr` once the schedule set
    the lr, `allows_step` before every `optimizer.step()` and `after_step` after the step's hooks.
    """

    def __init__(
        self, cfg: NanGuardCfg, accelerator: Accelerator, state: TrainState, checkpoints: CheckpointManager
    ) -> None:
        self.cfg = cfg
        self.accelerator = accelerator
        self.state = state
        self.checkpoints = checkpoints
        self.preemption = Preemption()
        self.lr_factor = 1.0
        self.rollbacks = 0
        self.skips_in_a_row = 0
        self._bad_loss: torch.Tensor | None = None
        self._verdict: tuple[bool, int] = (False, 0)  # (non-finite, agreed signal) of the last step
        self._terms = ""

    def scale_lr(self, optimizer: torch.optim.Optimizer) -> None:
        """After a rollback: this iteration's lr, as the schedule set it, times the rollback factor."""
        if self.lr_factor != 1.0:
            for group in optimizer.param_groups:
                group["lr"] *= self.lr_factor

    # ----------------------------------------------------------------- checkpoint part

    def state_dict(self) -> dict[str, torch.Tensor]:
        if self.lr_factor == 1.0 and not self.rollbacks:
            return {}
        return {
            "lr_factor": torch.tensor([self.lr_factor], dtype=torch.float64),
            "rollbacks": torch.tensor([self.rollbacks], dtype=torch.int64),
        }

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.lr_factor = float(state["lr_factor"][0]) if state else 1.0
        self.rollbacks = int(state["rollbacks"][0]) if state else 0

    # ----------------------------------------------------------------- the vote

    def allows_step(self, loss: torch.Tensor, outputs: dict[str, Any], model: nn.Module) -> bool:
        """Called for every micro-batch before `optimizer.step()`; on the last one of a step, votes."""
        bad = ~torch.isfinite(loss.detach())
        self._bad_loss = bad if self._bad_loss is None else self._bad_loss | bad
        accelerator = self.accelerator
        if not accelerator.sync_gradients:
            return True
        bad_grad = torch.zeros((), dtype=torch.bool, device=bad.device)
        if accelerator.scaler is None:  # a scaled fp16 step with inf gradients is the scaler's business
            norm = outputs.get("grad_norm")
            if norm is None:
                grads = [p.grad for p in model.parameters() if p.grad is not None]
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
        where = f"iteration {self.state.iter + 1} (epoch {self.state.epoch + 1})"
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

    def after_step(self) -> bool:
        """After the step's hooks: stop for a signal, or roll back. True: rolled back, the epoch's batches are void."""
        nonfinite, signum = self._verdict
        self._verdict = (False, 0)
        if signum:
            self.preemption.stop(self.checkpoints, signum)
        if nonfinite and self.cfg.action == "rollback":
            self._rollback()
            return True
        return False

    def _rollback(self) -> None:
        where = f"iteration {self.state.iter} (epoch {self.state.epoch + 1})"
        if self.rollbacks >= self.cfg.max_skips:
            raise NonFiniteError(
                f"non-finite loss or gradient at {where}: {self._terms}; already rolled back "
                f"{self.rollbacks} times (nan_guard.max_skips = {self.cfg.max_skips})"
            )
        path = self.checkpoints.find_resumable()
        if path is None:
            raise NonFiniteError(
                f"non-finite loss or gradient at {where}: {self._terms}; no resumable checkpoint "
                f"under {self.checkpoints.root} to roll back to"
            )
        factor, rollbacks = self.lr_factor * self.cfg.rollback_lr_factor, self.rollbacks + 1
        self.checkpoints.resume(path)
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
