"""The hook protocol: what a hook may do at each stage of the loop in `trainer.py`.

The trainer calls the stages like this (epoch-based runner, workflow [["train", 1], ["val", 1]])::

    before_run
    repeat until runner.max_epochs train epochs are done:
        before_train_epoch
        for each iteration (one optimizer step; several batches under gradient accumulation):
            before_train_iter         # e.g. set lr / momentum for this iteration
            forward, backward, clip, optimizer.step
            after_train_iter          # e.g. log, save an iteration checkpoint
        after_train_epoch             # e.g. save an epoch checkpoint, evaluate
        before_val_epoch
        for each val batch:
            before_val_iter
            after_val_iter
        after_val_epoch               # trainer.val_results holds loss, num_samples and metrics
    after_run

Hooks run in priority order (lower value first; mmcv's names and numbers), ties in the order
they were registered. A hook reads and changes the trainer's public attributes (`epoch`,
`iter`, `inner_iter`, `model`, `optimizer`, `accelerator`, `recipe`, `run`, ...). The counters
count completed work: in `before_train_iter` `iter` is the 0-based index of the coming
iteration, in `after_train_iter` it is the number done (mmcv's `runner.iter + 1`); likewise
`epoch`. During the `*_iter` stages `trainer.batch` is the current batch (under gradient
accumulation, in `after_train_iter` the last micro-batch of the step) and, in the `after_*_iter`
stages, `trainer.outputs` is what the step produced: the dict of loss terms (tensors) while
training, the task's `val_step` outputs while validating.

`before_run` / `after_run` run once per Trainer run: `fit()`, or an `evaluate()` of a Trainer
that has not run. Besides the stages, a hook may adjust the train mode (`adjust_train_mode`,
called after every `model.train()`) and add state to checkpoints (`checkpoint_tensors`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, get_args

from ..errors import RecipeError, did_you_mean

if TYPE_CHECKING:
    import torch

    from ..trainer import Trainer

PRIORITIES: dict[str, int] = {
    "HIGHEST": 0,
    "VERY_HIGH": 10,
    "HIGH": 30,
    "ABOVE_NORMAL": 40,
    "NORMAL": 50,
    "BELOW_NORMAL": 60,
    "LOW": 70,
    "VERY_LOW": 90,
    "LOWEST": 100,
}

Stage = Literal[
    "before_run",
    "before_train_epoch",
    "before_train_iter",
    "after_train_iter",
    "after_train_epoch",
    "before_val_epoch",
    "before_val_iter",
    "after_val_iter",
    "after_val_epoch",
    "after_run",
]
STAGES: tuple[Stage, ...] = get_args(Stage)


class Hook:
    """Base class: override the stages you need; each receives the trainer."""

    priority: int = PRIORITIES["NORMAL"]

    def before_run(self, trainer: Trainer) -> None: ...
    def before_train_epoch(self, trainer: Trainer) -> None: ...
    def before_train_iter(self, trainer: Trainer) -> None: ...
    def after_train_iter(self, trainer: Trainer) -> None: ...
    def after_train_epoch(self, trainer: Trainer) -> None: ...
    def before_val_epoch(self, trainer: Trainer) -> None: ...
    def before_val_iter(self, trainer: Trainer) -> None: ...
    def after_val_iter(self, trainer: Trainer) -> None: ...
    def after_val_epoch(self, trainer: Trainer) -> None: ...
    def after_run(self, trainer: Trainer) -> None: ...

    def adjust_train_mode(self, trainer: Trainer) -> None:
        """Called after every `model.train()`: keep parts of the model in eval mode (frozen norms)."""

    def checkpoint_tensors(self, trainer: Trainer) -> dict[str, dict[str, torch.Tensor]]:
        """State this hook adds to every checkpoint, as `{file stem: tensors}` (e.g. the EMA weights)."""
        return {}

    def load_checkpoint_tensors(self, trainer: Trainer, tensors: dict[str, dict[str, torch.Tensor]]) -> None:
        """Restore that state on resume; `tensors` holds every extra file of the checkpoint by stem."""

    @staticmethod
    def every_n_epochs(trainer: Trainer, n: int) -> bool:
        """For `after_*` stages: the epochs done are a multiple of n."""
        return n > 0 and trainer.epoch % n == 0

    @staticmethod
    def every_n_iters(trainer: Trainer, n: int) -> bool:
        return n > 0 and trainer.iter % n == 0

    @staticmethod
    def every_n_inner_iters(trainer: Trainer, n: int) -> bool:
        return n > 0 and trainer.inner_iter % n == 0

    @staticmethod
    def end_of_epoch(trainer: Trainer) -> bool:
        return trainer.inner_iter == trainer.iters_per_epoch


def resolve_priority(value: int | str, path: str) -> int:
    """Accept mmcv's priority names or integers 0-100."""
    if isinstance(value, bool):
        raise RecipeError(f"{path} = {value!r}: expected a name ({', '.join(PRIORITIES)}) or an integer 0-100")
    if isinstance(value, int):
        if 0 <= value <= 100:
            return value
        raise RecipeError(f"{path} = {value!r}: an integer priority must be within 0-100")
    if isinstance(value, str) and value.upper() in PRIORITIES:
        return PRIORITIES[value.upper()]
    raise RecipeError(
        f"{path} = {value!r} is not a priority{did_you_mean(str(value), PRIORITIES)}; "
        f"expected one of {', '.join(PRIORITIES)} or an integer 0-100"
    )
