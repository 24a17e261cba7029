"""One vote per optimizer step: are this step's loss and gradients finite, and did a stop signal arrive?

Each process contributes local flags (a non-finite loss in any of the step's micro-batches, a
non-finite gradient norm, the signals it caught); one `accelerator.reduce` sums them, so every
process takes the same decision at the same step and no rank blocks in a collective the others
skip. Reading the result is the step's one host synchronisation (a tensor of 4 numbers).

Non-finite steps follow `[nan_guard] action`: "stop" exits naming the iteration and each loss
term; "skip" leaves the step unapplied (the iteration still counts, so the schedule and the data
order stay those of the recipe) and stops after `max_skips` in a row; "rollback" reloads the
newest resumable checkpoint and multiplies the lr by `rollback_lr_factor`, at most `max_skips`
times. Both act before the step's hooks and checkpoint: a skipped step puts back the buffers its
forward pass changed (BatchNorm's running statistics), a rollback replaces the whole state. Under
fp16 the grad scaler's own overflow skip is left alone: only the loss is checked there.

A stop signal stops the run after the step's hooks, with a checkpoint of that step (`_stop`); one
that comes after the last vote is acted on at the end of the run (`end_run`), never dropped.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from ..errors import RecipeError
from ..recipe.training_sections import NanGuardCfg
from .preemption import SIGNALS, Preemption, pass_on

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
    """The per-step vote and what follows from it; the checkpoint part `nan_guard` (the rollback lr factor and count).

    The loop installs `preemption` when an epoch starts, calls `begin_step` once the schedule set
    the lr, `allows_step` before every `optimizer.step()`, `rolled_back` once the step is done,
    `after_step` after the step's hooks and `end_run` once the run's last checkpoint is in place.
    `release`: the run lock's, called when a stop signal ends the run as it should.
    """

    def __init__(
        self,
        cfg: NanGuardCfg,
        accelerator: Accelerator,
        state: TrainState,
        checkpoints: CheckpointManager,
        release: Callable[[], None] = lambda: None,
    ) -> None:
        self.cfg = cfg
        self.accelerator = accelerator
        self.state = state
        self.checkpoints = checkpoints
        self.release = release
        self.preemption = Preemption(busy=lambda: checkpoints.writing)
        self._buffers: list[torch.Tensor] = []  # with action "skip": the buffers as the step found them
        self.lr_factor = 1.0
        self.rollbacks = 0
        self.skips_in_a_row = 0
        self._bad_loss: torch.Tensor | None = None
        self._verdict: tuple[bool, int] = (False, 0)  # (non-finite, agreed signal) of the last step
        self._terms = ""
        checkpoints.add(STEM, self)

    def begin_step(self, optimizer: torch.optim.Optimizer, model: nn.Module) -> None:
        """Before the step's first forward pass: after a rollback, this iteration's lr (as the schedule
        set it) times the rollback factor; with action "skip", a copy of the buffers the forward changes."""
        if self.lr_factor != 1.0:
            for group in optimizer.param_groups:
                group["lr"] *= self.lr_factor
        if self.cfg.action == "skip":
            buffers = [b.detach() for b in model.buffers()]
            if len(self._buffers) != len(buffers):
                self._buffers = [torch.empty_like(b) for b in buffers]
            torch._foreach_copy_(self._buffers, buffers)

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
        self.preemption.progress()  # a micro-batch is progress too (a step may take many)
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
            with torch.no_grad():
                torch._foreach_copy_([b.detach() for b in model.buffers()], self._buffers)
            logger.warning(
                "nan_guard: skipped %s, not applied (%s); %d in a row", where, self._terms, self.skips_in_a_row
            )
        return False

    def rolled_back(self) -> bool:
        """Once the step is done, before its hooks and checkpoint: a non-finite step with action
        "rollback" reloads the newest resumable checkpoint. True: rolled back, the epoch's batches are void."""
        if not (self._verdict[0] and self.cfg.action == "rollback"):
            return False
        self._verdict = (False, 0)  # a signal still stands: it is voted on again at the next step
        self._rollback()
        return True

    def after_step(self) -> None:
        """After the step's hooks: stop for a signal that any process caught."""
        signum = self._verdict[1]
        self._verdict = (False, 0)
        if signum:
            self._stop(signum)

    def end_run(self) -> None:
        """Finish the run's last checkpoint; a signal that came after the last step's vote (during the
        last val pass, or while that checkpoint was written) then stops the run as any other."""
        self.checkpoints.wait()
        if not self.preemption.installed:
            return
        local = torch.zeros(len(SIGNALS), dtype=torch.float32, device=self.accelerator.device)
        if self.preemption.signum:
            local[SIGNALS.index(self.preemption.signum)] = 1.0
        votes = self.accelerator.reduce(local, reduction="sum").tolist()
        signum = next((int(s) for s, v in zip(SIGNALS, votes) if v), 0)
        if signum:
            self._stop(signum)
        self.preemption.uninstall()

    def _stop(self, signum: int) -> None:
        """Write the checkpoint of this exact step, move `latest` to it and exit with 128 + the signal number."""
        self.preemption.boundary_reached()
        path = self.checkpoints.save_step()
        # A process that got no signal itself exits as the one that did.
        signum = self.preemption.signum or signum
        logger.warning(
            "preempted at epoch %d, iter %d by %s: saved %s; continue with --resume auto",
            self.state.epoch_shown,
            self.state.iter,
            signal.Signals(signum).name,
            path,
        )
        self.release()
        # Under a launcher: every process ignores the launcher's own signal before it gets the stop,
        # and none ends before it has it (it would take a process that ends first for a failure).
        launcher = self.preemption.hand_over()
        several = self.accelerator.num_processes > 1
        if several:
            self.accelerator.wait_for_everyone()
        if launcher and self.accelerator.is_local_main_process:
            pass_on(launcher, signum)
        if several:
            self.accelerator.wait_for_everyone()
        raise SystemExit(128 + signum)

    def _rollback(self) -> None:
        where = f"iteration {self.state.iter + 1} (epoch {self.state.epoch + 1})"
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
