"""The hook protocol: what a hook may do at each stage of the loop in `trainer.py`.

The trainer calls the stages like this (epoch-based runner, workflow [["train", 1], ["val", 1]])::

    before_run
    repeat until runner.max_epochs train epochs are done:
        before_train_epoch
        for each iteration (one optimizer step; several batches under gradient accumulation):
            before_train_iter         # e.g. set lr / momentum for this iteration
            forward, backward, clip, optimizer.step
            after_train_iter          # e.g. log; the loop saves an iteration checkpoint
        after_train_epoch             # e.g. evaluate; the loop saves an epoch checkpoint
        before_val_epoch
        for each val batch:
            before_val_iter
            after_val_iter
        after_val_epoch               # trainer.val_results holds loss, num_samples and metrics
    after_run

Hooks run in priority order (lower value first; mmcv's names and numbers), ties in the order
they were registered. The loop's own work inside a stage falls at the priority `LOOP_PRIORITY`
gives it, before the hooks of that priority: the checkpoint of an iteration or epoch at NORMAL
(after the EMA update, ABOVE_NORMAL, so the checkpoint holds it; before evaluation and logging,
LOW and VERY_LOW), the NaN guard's rollback lr factor at HIGH (after the schedule, VERY_HIGH).

A hook sees the trainer as a `TrainerView`: it reads and changes its public attributes
(`epoch`, `iter`, `inner_iter`, `model`, `optimizer`, `accelerator`, `recipe`, `run`, ...). The
counters count completed work: in `before_train_iter` `iter` is the 0-based index of the coming
iteration, in `after_train_iter` it is the number done (mmcv's `runner.iter + 1`); likewise
`epoch`. During the `*_iter` stages `trainer.batch` is the current batch (under gradient
accumulation, in `after_train_iter` the last micro-batch of the step) and, in the `after_*_iter`
stages, `trainer.outputs` is what the step produced: the dict of loss terms (tensors) while
training, the task's `val_step` outputs while validating.

`before_run` / `after_run` run once per Trainer run: `fit()`, or an `evaluate()` of a Trainer
that has not run. Besides the stages, a hook may adjust the train mode (`adjust_train_mode`,
called after every `model.train()`).

A hook may add state to checkpoints: set `state_name` (e.g. "ema") and define `state_dict()`,
returning `{name: tensor}`, and `load_state_dict(state)`. The Trainer registers such a hook as a
checkpoint part of that name: every checkpoint holds its tensors as `<state_name>.safetensors`
(none while `state_dict()` is empty), and a resume, or a NaN guard rollback, hands them back; a
checkpoint without the file hands back `{}`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, Protocol, get_args

from ..errors import RecipeError, did_you_mean

if TYPE_CHECKING:
    from pathlib import Path

    from accelerate import Accelerator
    from accelerate.optimizer import AcceleratedOptimizer
    from torch import nn
    from torch.utils.data import Dataset

    from ..checkpoint.manager import CheckpointManager
    from ..log import LogBuffer
    from ..recipe.root import Recipe
    from ..schedules.run_length import RunLength
    from ..tasks.base import Task

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

# Where the loop's own work falls among a stage's hooks (see the module docstring).
LOOP_PRIORITY: dict[Stage, int] = {
    "before_train_iter": PRIORITIES["HIGH"],
    "after_train_iter": PRIORITIES["NORMAL"],
    "after_train_epoch": PRIORITIES["NORMAL"],
}


class TrainerView(Protocol):
    """What a hook sees of the trainer; `trainer.Trainer` is one."""

    @property
    def recipe(self) -> Recipe: ...

    accelerator: Accelerator
    task: Task
    model: nn.Module  # as Accelerate prepared it; `unwrapped_model` is the module itself
    optimizer: AcceleratedOptimizer
    checkpoints: CheckpointManager  # `best` / `save_best` for SaveBestHook
    hooks: list[Hook]
    work_dir: Path
    timestamp: str  # of the run's log files
    train_dataset: Dataset
    val_dataset: Dataset
    train_loader: Any
    train_batch_size: int
    log_buffer: LogBuffer
    trackers_started: bool
    epoch: int
    iter: int
    inner_iter: int
    resume_inner_iter: int  # before a resumed epoch starts: its iterations already done
    batch: Any
    outputs: Any
    val_results: dict[str, Any]

    @property
    def by_epoch(self) -> bool: ...
    @property
    def run(self) -> RunLength: ...
    @property
    def iters_per_epoch(self) -> int: ...
    @property
    def max_epochs(self) -> int: ...
    @property
    def max_iters(self) -> int: ...
    @property
    def unwrapped_model(self) -> nn.Module: ...

    def current_lr(self) -> float: ...
    def build_train_loader(self, batch_size: int) -> Any: ...
    def set_train_mode(self) -> None: ...
    def validate(self) -> dict[str, Any]: ...
    def val_pass(self, model: nn.Module) -> dict[str, Any]: ...
    def register_hook(self, hook: Hook) -> None: ...


class Hook:
    """Base class: override the stages you need; each receives the trainer."""

    priority: int = PRIORITIES["NORMAL"]
    state_name: str = ""  # set, with state_dict / load_state_dict: a checkpoint part (see the module docstring)

    def before_run(self, trainer: TrainerView) -> None: ...
    def before_train_epoch(self, trainer: TrainerView) -> None: ...
    def before_train_iter(self, trainer: TrainerView) -> None: ...
    def after_train_iter(self, trainer: TrainerView) -> None: ...
    def after_train_epoch(self, trainer: TrainerView) -> None: ...
    def before_val_epoch(self, trainer: TrainerView) -> None: ...
    def before_val_iter(self, trainer: TrainerView) -> None: ...
    def after_val_iter(self, trainer: TrainerView) -> None: ...
    def after_val_epoch(self, trainer: TrainerView) -> None: ...
    def after_run(self, trainer: TrainerView) -> None: ...

    def adjust_train_mode(self, trainer: TrainerView) -> None:
        """Called after every `model.train()`: keep parts of the model in eval mode (frozen norms)."""

    @staticmethod
    def every_n_epochs(trainer: TrainerView, n: int) -> bool:
        """For `after_*` stages: the epochs done are a multiple of n."""
        return n > 0 and trainer.epoch % n == 0

    @staticmethod
    def every_n_iters(trainer: TrainerView, n: int) -> bool:
        return n > 0 and trainer.iter % n == 0

    @staticmethod
    def every_n_inner_iters(trainer: TrainerView, n: int) -> bool:
        return n > 0 and trainer.inner_iter % n == 0

    @staticmethod
    def end_of_epoch(trainer: TrainerView) -> bool:
        return trainer.inner_iter == trainer.iters_per_epoch


StageCall = Callable[[TrainerView], None]


def stage_calls(hooks: list[Hook]) -> dict[Stage, tuple[list[StageCall], list[StageCall]]]:
    """Each stage's hook methods in the order of `hooks` (those a hook overrides), split at the
    stage's `LOOP_PRIORITY`: those that run before the loop's own work, and those after it."""
    calls = {}
    for stage in STAGES:
        at = LOOP_PRIORITY.get(stage, PRIORITIES["LOWEST"] + 1)
        own = [h for h in hooks if getattr(type(h), stage) is not getattr(Hook, stage)]
        calls[stage] = (
            [getattr(h, stage) for h in own if h.priority < at],
            [getattr(h, stage) for h in own if h.priority >= at],
        )
    return calls


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
