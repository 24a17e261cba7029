"""Hooks: built-ins come from recipe sections; `custom_hooks` adds hooks by name or import path.

The hook tables (`log_config.hooks`, `custom_hooks`) are parsed once, when the recipe is loaded,
into `HookSpecs`; `build_hooks` makes the hooks from them.

Trust model: a recipe is code, like an mmcv config: `custom_hooks = [{type = "pkg.mod:Class"}]`
imports that module when a Trainer is built (a run that trains or evaluates). Checking a recipe
(`--print-recipe`, `schedule`, `import-mmcv`) imports nothing it names. Checkpoints and weights
files are data and never run code.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import RecipeError, did_you_mean
from ..progress import progress_enabled
from ..recipe.builder import field_names
from ..recipe.checks import check_choice, check_keys
from ..recipe.root import Recipe
from ..recipe.runtime_sections import LogCfg
from ..schedules import ScheduleSpec
from .base import PRIORITIES, Hook, resolve_priority
from .ema import EMAHook
from .evaluation import EvalHook
from .freeze import FreezeHook
from .logger import (
    LoggerHook,
    MlflowLoggerHook,
    TensorboardLoggerHook,
    TextLoggerHook,
    TrackerLoggerHook,
    WandbLoggerHook,
    tracker_run,
)
from .num_class_check import NumClassCheckHook
from .progress import TrainProgressHook, ValProgressHook
from .save_best import SaveBestHook
from .schedule import ScheduleHook

__all__ = ["PRIORITIES", "Hook", "HookSpec", "HookSpecs", "build_hooks", "tracker_run"]

LOGGER_HOOKS: dict[str, type[LoggerHook]] = {
    "TextLoggerHook": TextLoggerHook,
    "TensorboardLoggerHook": TensorboardLoggerHook,
    "WandbLoggerHook": WandbLoggerHook,
    "MlflowLoggerHook": MlflowLoggerHook,
}
TRACKER_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}
CUSTOM_HOOKS: dict[str, type[Hook]] = {"NumClassCheckHook": NumClassCheckHook}
LOGGER_KEYS = tuple(key for key in field_names(LogCfg) if key != "hooks")


def _check_hook_name(type_name: Any, path: str) -> None:
    """A built-in custom hook name, or `package.module:ClassName` whose top-level package exists.

    Finding a top-level module's spec runs none of its code."""
    if not isinstance(type_name, str) or not type_name:
        raise RecipeError(f"{path}.type must be a hook name or 'package.module:ClassName', got {type_name!r}")
    if ":" not in type_name:
        check_choice(type_name, CUSTOM_HOOKS, f"{path}.type")
        return
    module_name, _, class_name = type_name.partition(":")
    if not module_name or not class_name.isidentifier():
        raise RecipeError(f"{path}.type = {type_name!r}: expected 'package.module:ClassName'")
    top = module_name.split(".")[0]
    if not top.isidentifier() or importlib.util.find_spec(top) is None:
        raise RecipeError(
            f"{path}.type = {type_name!r}: cannot import module {module_name!r} (no module named {top!r})"
        )


def _hook_class(type_name: str, path: str) -> type[Hook]:
    """Import the class a checked `package.module:ClassName` names (this runs the module's top-level code)."""
    module_name, _, class_name = type_name.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise RecipeError(f"{path}.type = {type_name!r}: cannot import module {module_name!r} ({exc})") from None
    cls = getattr(module, class_name, None)
    if cls is None:
        names = [n for n, v in vars(module).items() if isinstance(v, type)]
        raise RecipeError(
            f"{path}.type = {type_name!r}: no class {class_name!r} in {module_name}{did_you_mean(class_name, names)}"
        )
    if not (isinstance(cls, type) and issubclass(cls, Hook)):
        raise RecipeError(f"{path}.type = {type_name!r} is not a subclass of accel_trainer.Hook")
    return cls


def _check_kwargs(cls: type, kwargs: Mapping[str, Any], path: str) -> None:
    params = inspect.signature(cls).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    allowed = [n for n in params if n != "self"]
    for key in kwargs:
        if key not in allowed:
            raise RecipeError(
                f"unknown key {path}.{key}{did_you_mean(key, allowed)}: {cls.__name__} takes "
                f"{', '.join(allowed) or 'no arguments'}"
            )


@dataclass(frozen=True)
class HookSpec:
    """One hook table, checked at load: the hook's class, its arguments and its priority (None:
    the class's own). A custom hook named by import path has no `cls` until `build` imports it."""

    path: str  # where the table is, for messages: "custom_hooks[0]"
    type_name: str
    kwargs: Mapping[str, Any]
    cls: type[Hook] | None
    priority: int | None = None

    def build(self) -> Hook:
        """Make the hook; a custom hook's module is imported here (this runs its top-level code)."""
        cls = self.cls
        if cls is None:
            cls = _hook_class(self.type_name, self.path)
            _check_kwargs(cls, self.kwargs, self.path)
        hook = cls(**self.kwargs)
        if self.priority is not None:
            hook.priority = self.priority
        return hook


def _custom_hook_spec(cfg: dict, path: str) -> HookSpec:
    kwargs = dict(cfg)
    type_name = kwargs.pop("type", None)
    _check_hook_name(type_name, path)
    priority = resolve_priority(kwargs.pop("priority", "NORMAL"), f"{path}.priority")
    cls = CUSTOM_HOOKS.get(type_name)
    if cls is not None:
        _check_kwargs(cls, kwargs, path)
    return HookSpec(path, type_name, kwargs, cls, priority)


def _logger_hook_spec(cfg: dict, recipe: Recipe, path: str) -> HookSpec:
    kwargs = dict(cfg)
    name = kwargs.pop("type", None)
    check_choice(name, LOGGER_HOOKS, f"{path}.type")
    cls = LOGGER_HOOKS[name]
    tracker = issubclass(cls, TrackerLoggerHook)
    check_keys(kwargs, (*LOGGER_KEYS, "init_kwargs") if tracker else LOGGER_KEYS, path)
    if "init_kwargs" in kwargs and not isinstance(kwargs["init_kwargs"], dict):
        raise RecipeError(
            f"{path}.init_kwargs = {kwargs['init_kwargs']!r}: expected a table of the tracker's arguments"
        )
    lc = recipe.log_config
    args: dict[str, Any] = dict(
        interval=lc.interval,
        ignore_last=lc.ignore_last,
        reset_flag=lc.reset_flag,
        by_epoch=recipe.by_epoch if lc.by_epoch is None else lc.by_epoch,
    )
    args.update(kwargs)
    return HookSpec(path, name, args, cls)


@dataclass(frozen=True)
class HookSpecs:
    """`log_config.hooks` and `custom_hooks`, parsed and checked when the recipe is loaded."""

    loggers: tuple[HookSpec, ...]
    custom: tuple[HookSpec, ...]

    @classmethod
    def from_recipe(cls, recipe: Recipe) -> HookSpecs:
        """Check the hook tables and tracker packages without starting or importing anything they name."""
        hooks = recipe.log_config.hooks
        loggers = tuple(_logger_hook_spec(cfg, recipe, f"log_config.hooks[{i}]") for i, cfg in enumerate(hooks))
        for tracker in _trackers(loggers):
            if importlib.util.find_spec(TRACKER_PACKAGES[tracker]) is None:
                raise RecipeError(
                    f"log_config.hooks asks for the {tracker} tracker but the package is not installed: "
                    f"pip install {TRACKER_PACKAGES[tracker]}"
                )
        custom = tuple(_custom_hook_spec(cfg, f"custom_hooks[{i}]") for i, cfg in enumerate(recipe.custom_hooks))
        return cls(loggers, custom)

    @property
    def trackers(self) -> list[str]:
        """Accelerate `log_with` names of the tracker logger hooks."""
        return _trackers(self.loggers)


def _trackers(loggers: tuple[HookSpec, ...]) -> list[str]:
    names = []
    for spec in loggers:
        tracker = getattr(spec.cls, "tracker", "")
        if tracker and tracker not in names:
            names.append(tracker)
    return names


def build_hooks(recipe: Recipe, specs: HookSpecs, schedule: ScheduleSpec, progress: bool | None = None) -> list[Hook]:
    """The hooks a recipe asks for: built from its sections, its hook tables (`specs`) and its
    schedules; progress bars when `progress` (None: when stdout is a terminal)."""
    # The class-count check is always on; `custom_hooks = [{type = "NumClassCheckHook"}]` (mmcv's
    # runtime configs name it) is accepted and adds nothing.
    hooks: list[Hook] = [ScheduleHook(schedule), NumClassCheckHook()]
    if recipe.freeze.epochs:
        hooks.append(FreezeHook(recipe.freeze.modules, recipe.freeze.epochs, recipe.freeze.batch_size))
    ev = recipe.evaluation
    if not any(phase == "val" for phase, _ in recipe.workflow):
        hooks.append(EvalHook(ev.interval, ev.start, ev.by_epoch if recipe.by_epoch else False))
    if recipe.ema.enable:
        hooks.append(EMAHook(recipe.ema.decay, recipe.ema.warmup, recipe.ema.update_interval, recipe.ema.eval))
    if ev.save_best:
        hooks.append(SaveBestHook(ev.save_best, ev.rule, ev.greater_keys, ev.less_keys))
    hooks += [spec.build() for spec in (*specs.loggers, *specs.custom) if spec.cls is not NumClassCheckHook]
    if progress_enabled(progress):
        hooks += [TrainProgressHook(), ValProgressHook()]
    return hooks
