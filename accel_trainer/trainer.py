"""The training loop: workflow phases over an epoch- or iteration-based runner, driven by hooks.

Accelerate owns devices, DDP, mixed precision, gradient accumulation and metric gathering; this
file owns the order of things (see the stage diagram in `hooks/base.py`). The counters
`epoch`, `iter` and `inner_iter` count completed work: they advance just before the `after_*`
hooks of the epoch / iteration they count, so a `before_*` hook sees the 0-based index of what
is about to run and an `after_*` hook sees how many are done.
"""

from __future__ import annotations

import gc
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from accelerate.optimizer import AcceleratedOptimizer
from accelerate.utils import set_seed
from torch import nn
from torch.utils.data import Dataset

from .checkpoint import weights
from .checkpoint.manager import CheckpointManager
from .checkpoint.state import StateCounter, TrainState
from .classes import dataset_classes
from .data.loader import batches_per_process
from .distributed import (
    announce_hardware,
    batch_to_channels_last,
    build_accelerator,
    maybe_sync_batchnorm,
    model_to_channels_last,
)
from .files import write_text
from .hooks import Hook, build_hooks, tracker_run
from .hooks.base import Stage, stage_calls
from .hooks.logger import flat_hparams
from .log import LogBuffer, setup_logging
from .loop.run_lock import RunLock
from .loop.step_guard import StepGuard
from .optim import build_recipe_optimizer
from .recipe.load import LoadedRecipe, load_recipe
from .recipe.reading import dump_toml
from .schedules.run_length import RunLength
from .tasks import build_task

logger = logging.getLogger(__name__)


class Trainer:
    """Trains and evaluates one recipe.

    `Trainer(recipe)` builds everything from the recipe; pass `model`, `train_dataset` or
    `val_dataset` to bring your own parts (datasets yield what the recipe's task expects).
    `progress`: progress bars on stdout (None: when it is a terminal).
    """

    epoch = StateCounter()
    iter = StateCounter()
    inner_iter = StateCounter()
    resume_inner_iter = StateCounter()

    def __init__(
        self,
        recipe: LoadedRecipe,
        *,
        model: nn.Module | None = None,
        train_dataset: Dataset | None = None,
        val_dataset: Dataset | None = None,
        hooks: Iterable[Hook] = (),
        progress: bool | None = None,
    ) -> None:
        self.recipe = recipe
        self.work_dir = Path(recipe.work_dir)
        acc, specs = recipe.accelerate, recipe.specs
        # Custom hook modules are imported here, when a run is about to train or evaluate.
        built_hooks = build_hooks(recipe, specs.hooks, specs.schedule, progress)
        self.accelerator = build_accelerator(recipe, specs.hooks.trackers)
        self.timestamp = time.strftime("%Y%m%d_%H%M%S")
        setup_logging(self.work_dir / f"{self.timestamp}.log", recipe.log_level, self.accelerator.is_main_process)
        set_seed(acc.seed, deterministic=acc.deterministic)
        # Let cuDNN time its algorithms for our fixed shapes, unless results must be bit-exact.
        torch.backends.cudnn.benchmark = not acc.deterministic
        announce_hardware(self.accelerator, acc.cpu_threads)

        self.task = build_task(recipe)
        self.model = model if model is not None else self.task.build_model()
        self.model = maybe_sync_batchnorm(
            self.model, acc.sync_bn, self.accelerator.num_processes, self.accelerator.device
        )
        self.channels_last = acc.channels_last
        if self.channels_last:
            self.model = model_to_channels_last(self.model)
        if train_dataset is None or val_dataset is None:
            built_train, built_val = self.task.build_datasets()
            train_dataset = train_dataset if train_dataset is not None else built_train
            val_dataset = val_dataset if val_dataset is not None else built_val
        self.train_dataset, self.val_dataset = train_dataset, val_dataset
        self.task.bind_val_dataset(val_dataset)

        self.optimizer: AcceleratedOptimizer
        self.model, self.optimizer = self.accelerator.prepare(
            self.model, build_recipe_optimizer(self.model, recipe, specs.optimizer, self.accelerator.num_processes)
        )
        self.train_loader = self.build_train_loader(recipe.data.batch_size)
        self._run: RunLength | None = None
        self.val_loader = self.accelerator.prepare(
            self.task.build_loader(self.val_dataset, batch_size=recipe.data.batch_size, train=False)
        )
        self.grad_clip = recipe.optimizer_config.grad_clip
        self.state = TrainState(by_epoch=recipe.by_epoch)
        self.checkpoints = CheckpointManager.of_run(
            recipe,
            self.accelerator,
            self.unwrapped_model,
            self.optimizer.optimizer,
            self.state,
            info=lambda: {"train_batch_size": self.train_batch_size, "classes": dataset_classes(self.val_dataset)},
        )
        self.run_lock = RunLock(self.work_dir, self.accelerator, self.checkpoints)
        self.guard = StepGuard(recipe.nan_guard, self.accelerator, self.state, self.checkpoints, self.run_lock.release)
        self._validated_at: int | None = None  # self.iter of the newest val_results
        if recipe.load_from:
            self.load_weights(recipe.load_from)

        self.val_results: dict[str, Any] = {}
        self.log_buffer = LogBuffer()
        self.iter_time = self.data_time = 0.0
        # What the current `*_iter` stage is about: the batch, and the step's outputs (loss terms
        # while training; the task's val outputs while validating).
        self.batch: Any = None
        self.outputs: Any = None
        self.run_started = False  # before_run has been called (once per Trainer)
        self.trackers_started = False
        self._batches: Iterator | None = None
        self.hooks: list[Hook] = []
        for hook in (*built_hooks, *hooks):
            self.register_hook(hook)

    @classmethod
    def from_recipe(
        cls,
        path: str | Path,
        overrides: Mapping[str, Any] | None = None,
        work_dir: str | Path | None = None,
        **parts: Any,
    ) -> Trainer:
        return cls(load_recipe(path, overrides, work_dir), **parts)

    # ----------------------------------------------------------------- construction

    def build_train_loader(self, batch_size: int):
        """(Re)build the prepared train loader, e.g. when a freeze stage changes the batch size."""
        loader = self.task.build_loader(self.train_dataset, batch_size=batch_size, train=True)
        self.train_batch_size = batch_size
        return self.accelerator.prepare(loader)

    def steps_per_epoch(self, batch_size: int) -> int:
        """Optimizer steps in one epoch at this per-process batch size: the train loader's own
        length, or for another batch size a loader built (never iterated) to count."""
        if batch_size == self.train_batch_size:
            batches = len(self.train_loader)
        else:
            loader = self.task.build_loader(self.train_dataset, batch_size=batch_size, train=True)
            batches = batches_per_process(loader, self.accelerator.num_processes)
        return math.ceil(batches / self.accelerator.gradient_accumulation_steps)

    @property
    def run(self) -> RunLength:
        """The run's length, stage by stage; counted on first use, so a train loader swapped in
        before `fit()` counts."""
        if self._run is None:
            self._run = RunLength.of_recipe(self.recipe, self.steps_per_epoch)
        return self._run

    def register_hook(self, hook: Hook) -> None:
        """Insert by priority (equal priorities keep registration order); a hook with a `state_name`
        becomes a checkpoint part."""
        if hook.state_name:
            self.checkpoints.add(hook.state_name, hook)
        at = len(self.hooks)
        while at > 0 and self.hooks[at - 1].priority > hook.priority:
            at -= 1
        self.hooks.insert(at, hook)
        self._stage_hooks = stage_calls(self.hooks)

    def call(self, stage: Stage, loop_work: Callable[[], object] | None = None) -> None:
        """Run the stage's hooks; `loop_work`, the loop's own part of the stage, at its `LOOP_PRIORITY`."""
        early, late = self._stage_hooks[stage]
        self.guard.preemption.progress()
        for fn in early:
            fn(self)
        if loop_work is not None:
            loop_work()
        for fn in late:
            fn(self)

    # ----------------------------------------------------------------- progress

    @property
    def by_epoch(self) -> bool:
        return self.recipe.by_epoch

    @property
    def iters_per_epoch(self) -> int:
        """Optimizer steps of the current epoch (a freeze stage's batch size changes it)."""
        return self.run.iters_per_epoch(self.epoch)

    @property
    def max_epochs(self) -> int:
        return self.run.max_epochs

    @property
    def max_iters(self) -> int:
        return self.run.max_iters

    @property
    def unwrapped_model(self) -> nn.Module:
        return self.accelerator.unwrap_model(self.model, keep_torch_compile=False)

    def current_lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def weights_replaced(self) -> None:
        """Weights were loaded from outside the loop: the last val results no longer describe them."""
        self._validated_at = None

    def load_weights(self, path: str | Path) -> None:
        """Whole-model weights (`load_from`, `--eval-only`): no optimizer state, no counters."""
        opts = self.recipe.load_options
        model, tensors = self.unwrapped_model, weights.load_weights(path)
        weights.fit_weights(model, tensors, source=path, revise_keys=opts.key_renames, strict=opts.strict)
        self.weights_replaced()
        logger.info("loaded weights from %s", path)

    def _done(self) -> bool:
        return self.epoch >= self.max_epochs if self.by_epoch else self.iter >= self.max_iters

    # ----------------------------------------------------------------- the loop

    def fit(self, resume: str | Path | bool | None = None) -> None:
        """Run the workflow phases until the runner's budget is spent.

        `resume`: a checkpoint path, True for the newest resumable one in work_dir, "auto" for that
        or a fresh start when there is none, None for the recipe's `resume_from`.
        """
        self.run_lock.hold()
        if self.accelerator.is_main_process:
            write_text(self.work_dir / "recipe.toml", dump_toml(self.recipe.to_dict()))
        if resume is None and self.recipe.resume_from:
            resume = self.recipe.resume_from
        if resume:
            self.checkpoints.resume(None if resume is True else resume)
            self.weights_replaced()
        # The objects built so far live for the whole run: frozen, the collector's full passes
        # (hundreds of ms each, every ~100 steps) skip them. Unfrozen after, also after an error.
        gc.freeze()
        try:
            self._start_run()
            while not self._done():
                for phase, count in self.recipe.workflow:
                    if phase == "train":
                        self._train_phase(count)
                    else:
                        for _ in range(count):
                            self.validate()
            self._end_run()
        finally:
            self.guard.preemption.uninstall()
            gc.unfreeze()

    def _start_run(self) -> None:
        """Run-level setup, once per Trainer: trackers, then the hooks' `before_run`."""
        if self.run_started:
            return
        self.run_started = True
        if self.recipe.specs.hooks.trackers:
            project, init_kwargs = tracker_run(self.hooks, self.work_dir)
            self.accelerator.init_trackers(project, config=flat_hparams(self.recipe.to_dict()), init_kwargs=init_kwargs)
            self.trackers_started = True
        self.call("before_run")

    def _end_run(self) -> None:
        self.call("after_run")
        self.guard.end_run()  # the last checkpoint in place; a signal after the last step's vote stops the run too
        self.run_lock.release()  # once the last checkpoint is in place
        if self.trackers_started:
            self.accelerator.end_training()
            self.trackers_started = False
        self.accelerator.wait_for_everyone()

    def _train_phase(self, count: int) -> None:
        """`count` epochs (epoch runner) or `count` iterations (iteration runner)."""
        if self.by_epoch:
            for _ in range(count):
                if self._done():
                    return
                self._begin_epoch()
                self._run_iterations(None)
            return
        target = min(self.iter + count, self.max_iters)
        while self.iter < target:
            if self._batches is None:
                self._begin_epoch()
            self._run_iterations(target - self.iter)

    def _begin_epoch(self) -> None:
        """Start the epoch's batches; after a mid-epoch resume, skip the iterations already done.

        `before_train_epoch` runs first, so a hook may swap `train_loader` (freeze stages do).
        """
        self.set_train_mode()
        self.guard.preemption.install()  # training only: --eval-only keeps the default signal behaviour
        self.call("before_train_epoch")
        self.train_loader.set_epoch(self.epoch)
        loader = self.train_loader
        done = self.state.begin_epoch()
        if done:
            loader = self.accelerator.skip_first_batches(loader, done * self.accelerator.gradient_accumulation_steps)
        self.accelerator.step = 0
        self._batches = iter(loader)

    def _run_iterations(self, limit: int | None) -> None:
        """Train until `limit` optimizer steps ran or the epoch's batches are used up."""
        accelerator, model, optimizer = self.accelerator, self.model, self.optimizer
        steps, in_window = 0, False
        tick = time.perf_counter()
        assert self._batches is not None, "_begin_epoch starts the batches"
        for batch in self._batches:
            if not in_window:
                in_window = True
                self.data_time = time.perf_counter() - tick
                self.call("before_train_iter", lambda: self.guard.begin_step(optimizer, model))
            if self.channels_last:
                batch = batch_to_channels_last(batch)
            self.batch = batch
            with accelerator.accumulate(model):
                loss, outputs = self.task.train_loss(model, batch)
                accelerator.backward(loss)
                if accelerator.sync_gradients and self.grad_clip:
                    outputs["grad_norm"] = accelerator.clip_grad_norm_(
                        model.parameters(), self.grad_clip.max_norm, self.grad_clip.norm_type
                    )
                if self.guard.allows_step(loss, outputs, model):
                    optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            self.log_buffer.update(outputs)
            if accelerator.sync_gradients:
                in_window = False
                if self.guard.rolled_back():  # before the step's hooks and checkpoint; this epoch's batches are void
                    self._batches = None
                    return self.weights_replaced()
                self.iter_time = time.perf_counter() - tick
                self.log_buffer.update_host({"time": self.iter_time, "data_time": self.data_time})
                self.iter += 1
                self.inner_iter += 1
                self.outputs = outputs
                self.call(
                    "after_train_iter", lambda: self.checkpoints.after_train_iter(last=self.iter == self.max_iters)
                )
                self.guard.after_step()  # a stop signal: the checkpoint of this step, then exit
                steps += 1
                tick = time.perf_counter()
                if limit is not None and steps >= limit:
                    return
        self._batches = None
        self.state.end_epoch()
        self.call("after_train_epoch", lambda: self.checkpoints.after_train_epoch(last=self.epoch == self.max_epochs))

    def set_train_mode(self) -> None:
        """Put the model in training mode; hooks (freeze, norm_eval) may keep parts in eval."""
        self.model.train()
        for hook in self.hooks:
            hook.adjust_train_mode(self)

    @torch.no_grad()
    def validate(self) -> dict[str, Any]:
        """One pass over the val set: loss and metrics, every sample counted once across processes."""
        self.model.eval()
        self.call("before_val_epoch")
        self.val_results = self.val_pass(self.model)
        self.call("after_val_epoch")
        self._validated_at = self.iter
        self.set_train_mode()
        return self.val_results

    @torch.no_grad()
    def val_pass(self, model: nn.Module) -> dict[str, Any]:
        """Metrics of `model` (in eval mode): the trained model, or a copy such as the EMA."""
        self.task.reset_metrics()
        for batch in self.val_loader:
            if self.channels_last:
                batch = batch_to_channels_last(batch)
            self.batch = batch
            self.call("before_val_iter")
            self.outputs = self.task.val_step(model, batch, self.accelerator)
            self.call("after_val_iter")
        return self.task.compute_metrics()

    def predict(self, images, **options: Any) -> list[dict[str, Any]]:
        """Records for `images` (paths, PIL images, tensors) from the model in memory; see `Predictor.predict`."""
        from .classes import resolve_classes
        from .predict import Predictor

        classes = resolve_classes(dataset_classes(self.val_dataset), self.recipe.model.num_classes, "the val dataset")
        model = self.unwrapped_model
        was_training = model.training
        try:
            return Predictor(self.recipe, model, classes, self.accelerator.device).predict(images, **options)
        finally:
            if was_training:
                self.set_train_mode()

    def evaluate(self) -> dict[str, Any]:
        """Evaluate the current weights once and return the val results.

        Run-level stages are not replayed: a Trainer that never ran opens and closes a run around
        this evaluation; after `fit()` the last results are returned when they are of the current
        weights (no second val record), else the val set is evaluated again.
        """
        if not self.run_started:
            self._start_run()
            results = self.validate()
            self._end_run()
            return results
        if self._validated_at == self.iter and self.val_results:
            return self.val_results
        return self.validate()
