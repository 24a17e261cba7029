"""Logger hooks: the text/JSON log and the experiment trackers (through Accelerate's tracker API).

mmcv semantics: every `interval` iterations (per epoch when `by_epoch`) the window is averaged
and each logger writes it; with `ignore_last = false` the short window at an epoch's end is
written too; the last logger hook clears the window (`reset_flag`).
"""

from __future__ import annotations

import datetime
import inspect
import json
import logging
import resource
import time
from pathlib import Path
from typing import Any

import torch

from ..errors import RecipeError, did_you_mean
from ..files import open_append
from ..plotting import write_run_curves
from ..recipe.checks import is_number
from .base import PRIORITIES, Hook, TrainerView

logger = logging.getLogger(__name__)


def _memory_mb(device: torch.device) -> int:
    """Peak memory: CUDA allocator peak on GPU, process peak RSS on CPU."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device) / 2**20)
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


class LoggerHook(Hook):
    """Decides when a window is written; subclasses decide where."""

    priority = PRIORITIES["VERY_LOW"]

    def __init__(self, interval: int = 50, ignore_last: bool = True, reset_flag: bool = False, by_epoch: bool = True):
        self.interval = interval
        self.ignore_last = ignore_last
        self.reset_flag = reset_flag
        self.by_epoch = by_epoch

    def write_train(self, trainer: TrainerView, record: dict[str, Any]) -> None:
        raise NotImplementedError

    def write_val(self, trainer: TrainerView, record: dict[str, Any]) -> None:
        raise NotImplementedError

    def before_run(self, trainer: TrainerView) -> None:
        last = [h for h in trainer.hooks if isinstance(h, LoggerHook)][-1]
        last.reset_flag = True

    def before_train_epoch(self, trainer: TrainerView) -> None:
        trainer.log_buffer.clear()

    def after_train_iter(self, trainer: TrainerView) -> None:
        buffer = trainer.log_buffer
        due = (
            self.every_n_inner_iters(trainer, self.interval)
            if self.by_epoch
            else self.every_n_iters(trainer, self.interval)
        )
        if not buffer.ready and (due or (self.end_of_epoch(trainer) and not self.ignore_last)):
            buffer.average(trainer.accelerator)
        self._write_window(trainer)

    def after_train_epoch(self, trainer: TrainerView) -> None:
        self._write_window(trainer)

    def _write_window(self, trainer: TrainerView) -> None:
        buffer = trainer.log_buffer
        if not buffer.ready:
            return
        if trainer.accelerator.is_main_process:
            self.write_train(trainer, self.train_record(trainer, buffer.output))
        if self.reset_flag:
            buffer.clear_output()

    def after_val_epoch(self, trainer: TrainerView) -> None:
        if trainer.accelerator.is_main_process:
            record = {"mode": "val", "epoch": trainer.epoch, "iter": trainer.iter, "lr": trainer.current_lr()}
            record.update(trainer.val_results)
            self.write_val(trainer, record)

    def train_record(self, trainer: TrainerView, window: dict[str, float]) -> dict[str, Any]:
        record: dict[str, Any] = {"mode": "train", "epoch": trainer.epoch + 1}
        record["iter"] = trainer.inner_iter if self.by_epoch else trainer.iter
        record["global_iter"] = trainer.iter  # one x axis across epochs for `accel-trainer plot`
        record["lr"] = trainer.current_lr()
        record["memory"] = _memory_mb(trainer.accelerator.device)
        record.update(window)
        return record


class TextLoggerHook(LoggerHook):
    """Console and `work_dir/<timestamp>.log` lines in the seeds' style, plus `<timestamp>.log.json`
    and, at the end of the run, `work_dir/curves.png` (with the `plot` extra)."""

    def before_run(self, trainer: TrainerView) -> None:
        super().before_run(trainer)
        self.json_path = Path(trainer.work_dir) / f"{trainer.timestamp}.log.json"
        self.start_time = time.perf_counter()
        self.start_iter = trainer.iter
        if trainer.iter and trainer.accelerator.is_main_process:
            # A resumed run: `accel-trainer plot` and curves.png continue the earlier logs from here.
            self._append_json({"mode": "run", "resumed_at_iter": trainer.iter})

    def _append_json(self, record: dict[str, Any]) -> None:
        with open_append(self.json_path) as f:
            f.write(json.dumps(record) + "\n")

    def write_train(self, trainer: TrainerView, record: dict[str, Any]) -> None:
        self._append_json(record)
        if self.by_epoch:
            where = f"Epoch [{record['epoch']}][{record['iter']}/{trainer.iters_per_epoch}]"
        else:
            where = f"Iter [{record['iter']}/{trainer.max_iters}]"
        done = max(trainer.iter - self.start_iter, 1)
        per_iter = (time.perf_counter() - self.start_time) / done
        eta = datetime.timedelta(seconds=int(per_iter * (trainer.max_iters - trainer.iter)))
        parts = [f"lr: {record['lr']:.3e}", f"eta: {eta}"]
        parts += [f"{k}: {v:.3f}" for k, v in record.items() if k in ("time", "data_time")]
        parts.append(f"memory: {record['memory']}")
        parts += [_fmt(k, v) for k, v in record.items() if k not in _TRAIN_META]
        logger.info("%s %s", where, ", ".join(parts))

    def write_val(self, trainer: TrainerView, record: dict[str, Any]) -> None:
        self._append_json(record)
        parts = [_fmt(k, v) for k, v in record.items() if k not in ("mode", "epoch", "iter", "lr")]
        where = f"Epoch(val) [{record['epoch']}]" if trainer.by_epoch else f"Iter(val) [{record['iter']}]"
        logger.info("%s %s", where, ", ".join(parts))

    def after_run(self, trainer: TrainerView) -> None:
        if trainer.accelerator.is_main_process:
            write_run_curves(self.json_path, Path(trainer.work_dir) / "curves.png")


_TRAIN_META = ("mode", "epoch", "iter", "global_iter", "lr", "memory", "time", "data_time")
_COUNTERS = ("epoch", "iter", "global_iter")


def _fmt(key: str, value: Any) -> str:
    return f"{key}: {value:.4f}" if isinstance(value, float) else f"{key}: {value}"


class TrackerLoggerHook(LoggerHook):
    """Scalars to an Accelerate tracker (`train/loss`, `train/lr`, `val/top1`, ...).

    `init_kwargs` (mmcv's table) goes to the tracker's constructor through Accelerate's
    `init_trackers`: `wandb.init` arguments for W&B, `MLflowTracker` arguments for MLflow,
    `SummaryWriter` arguments for TensorBoard. The run's project is the work_dir's name unless
    `init_kwargs[name_key]` names it.
    """

    tracker = ""
    name_key = ""  # the init_kwargs key that names the project, taken out of the kwargs

    def __init__(self, init_kwargs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.init_kwargs = dict(init_kwargs or {})

    def accepted_keys(self) -> set[str] | None:
        """The keyword arguments the tracker's constructor takes (None: any); imported at run start."""
        return None

    def write_train(self, trainer: TrainerView, record: dict[str, Any]) -> None:
        self._log(trainer, "train", record)

    def write_val(self, trainer: TrainerView, record: dict[str, Any]) -> None:
        self._log(trainer, "val", record)

    def _log(self, trainer: TrainerView, mode: str, record: dict[str, Any]) -> None:
        """The trainer starts and ends the trackers with the run; between runs there is nowhere to write."""
        if trainer.trackers_started:
            values = {f"{mode}/{k}": v for k, v in record.items() if is_number(v) and k not in _COUNTERS}
            trainer.accelerator.get_tracker(self.tracker).log(values, step=trainer.iter)


def _keyword_names(fn: Any, leave_out: tuple[str, ...]) -> set[str] | None:
    params = inspect.signature(fn).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params if p.name not in ("self", *leave_out)}


class TensorboardLoggerHook(TrackerLoggerHook):
    """Event files in `work_dir/tf_logs/<project>/`."""

    tracker = "tensorboard"

    def accepted_keys(self) -> set[str] | None:
        from torch.utils.tensorboard import SummaryWriter

        return _keyword_names(SummaryWriter.__init__, ("log_dir",))


class WandbLoggerHook(TrackerLoggerHook):
    tracker = "wandb"
    name_key = "project"

    def accepted_keys(self) -> set[str] | None:
        import wandb

        return _keyword_names(wandb.init, ())


class MlflowLoggerHook(TrackerLoggerHook):
    tracker = "mlflow"
    name_key = "experiment_name"

    def accepted_keys(self) -> set[str] | None:
        from accelerate.tracking import MLflowTracker

        return _keyword_names(MLflowTracker.__init__, ())


def tracker_run(hooks: list[Hook], work_dir: Path) -> tuple[str, dict[str, dict[str, Any]]]:
    """Accelerate's `init_trackers(project_name, init_kwargs=...)` arguments for these hooks.

    Accelerate gives every tracker the same project name: the work_dir's name, or the one a
    tracker's `init_kwargs` sets (W&B `project`, MLflow `experiment_name`); two different ones
    are an error. Unknown `init_kwargs` keys are named before any tracker starts.
    """
    named: dict[str, str] = {}
    init_kwargs: dict[str, dict[str, Any]] = {}
    for hook in hooks:
        if not isinstance(hook, TrackerLoggerHook):
            continue
        kwargs = dict(hook.init_kwargs)
        if hook.name_key in kwargs:
            named[f"{type(hook).__name__}.init_kwargs.{hook.name_key}"] = str(kwargs.pop(hook.name_key))
        accepted = hook.accepted_keys() if kwargs else None
        unknown = [key for key in kwargs if accepted is not None and key not in accepted]
        if accepted is not None and unknown:
            raise RecipeError(
                f"{type(hook).__name__}.init_kwargs.{unknown[0]}: not an argument of the {hook.tracker} "
                f"tracker{did_you_mean(unknown[0], accepted)}; it takes {', '.join(sorted(accepted))}"
            )
        init_kwargs.setdefault(hook.tracker, {}).update(kwargs)
    if len(set(named.values())) > 1:
        raise RecipeError(
            f"{' and '.join(f'{k} = {v!r}' for k, v in named.items())}: Accelerate starts every tracker "
            "under one project name; set the same name (or one of them)"
        )
    project = next(iter(named.values()), Path(work_dir).name)
    return project, {name: kwargs for name, kwargs in init_kwargs.items() if kwargs}


def flat_hparams(data: dict, prefix: str = "") -> dict[str, Any]:
    """Flatten the recipe to `a.b.c` scalars (lists as text) for trackers' hyperparameter tables."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat_hparams(value, name + "."))
        elif isinstance(value, (int, float, str, bool)):
            out[name] = value
        else:
            out[name] = json.dumps(value)
    return out
