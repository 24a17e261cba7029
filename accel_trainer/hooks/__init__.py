"""Hooks: built-ins come from recipe sections; `custom_hooks` adds hooks by name or import path.

Trust model: a recipe is code, like an mmcv config: `custom_hooks = [{type = "pkg.mod:Class"}]`
imports that module when a Trainer is built (a run that trains or evaluates). Checking a recipe
(`--print-recipe`, `schedule`, `import-mmcv`) imports nothing it names. Checkpoints and weights
files are data and never run code.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
from typing import Any

from ..errors import RecipeError, check_choice, check_keys, did_you_mean
from ..progress import progress_enabled
from ..schema import LogCfg, Recipe, field_names
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

__all__ = ["PRIORITIES", "Hook", "build_hooks", "check_hook_configs", "tracker_names", "tracker_run"]

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


def _hook_class(type_name: Any, path: str) -> type[Hook]:
    """Import the class a custom hook table names (this runs the module's top-level code)."""
    _check_hook_name(type_name, path)
    if ":" not in type_name:
        return CUSTOM_HOOKS[type_name]
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


def _check_kwargs(cls: type, kwargs: dict, path: str) -> None:
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


def _custom_hook(cfg: dict, path: str) -> Hook:
    cfg = dict(cfg)
    cls = _hook_class(cfg.pop("type", None), path)
    priority = resolve_priority(cfg.pop("priority", "NORMAL"), f"{path}.priority")
    _check_kwargs(cls, cfg, path)
    hook = cls(**cfg)
    hook.priority = priority
    return hook


def _logger_hook(cfg: dict, recipe: Recipe, path: str) -> LoggerHook:
    cfg = dict(cfg)
    name = cfg.pop("type", None)
    check_choice(name, LOGGER_HOOKS, f"{path}.type")
    tracker = issubclass(LOGGER_HOOKS[name], TrackerLoggerHook)
    check_keys(cfg, (*LOGGER_KEYS, "init_kwargs") if tracker else LOGGER_KEYS, path)
    if "init_kwargs" in cfg and not isinstance(cfg["init_kwargs"], dict):
        raise RecipeError(f"{path}.init_kwargs = {cfg['init_kwargs']!r}: expected a table of the tracker's arguments")
    lc = recipe.log_config
    args: dict[str, Any] = dict(
        interval=lc.interval,
        ignore_last=lc.ignore_last,
        reset_flag=lc.reset_flag,
        by_epoch=recipe.by_epoch if lc.by_epoch is None else lc.by_epoch,
    )
    args.update(cfg)
    return LOGGER_HOOKS[name](**args)


def tracker_names(recipe: Recipe) -> list[str]:
    """Accelerate `log_with` names of the tracker logger hooks in `log_config.hooks`."""
    names = []
    for cfg in recipe.log_config.hooks:
        cls = LOGGER_HOOKS.get(str(cfg.get("type")))
        tracker = getattr(cls, "tracker", "")
        if tracker and tracker not in names:
            names.append(tracker)
    return names


def check_hook_configs(recipe: Recipe) -> None:
    """Check hook tables and tracker packages without starting or importing anything they name."""
    for i, cfg in enumerate(recipe.log_config.hooks):
        _logger_hook(cfg, recipe, f"log_config.hooks[{i}]")
    for tracker in tracker_names(recipe):
        if importlib.util.find_spec(TRACKER_PACKAGES[tracker]) is None:
            raise RecipeError(
                f"log_config.hooks asks for the {tracker} tracker but the package is not installed: "
                f"pip install {TRACKER_PACKAGES[tracker]}"
            )
    for i, cfg in enumerate(recipe.custom_hooks):
        path = f"custom_hooks[{i}]"
        _check_hook_name(cfg.get("type"), path)
        resolve_priority(cfg.get("priority", "NORMAL"), f"{path}.priority")
        if cfg.get("type") in CUSTOM_HOOKS:
            _check_kwargs(
                CUSTOM_HOOKS[cfg["type"]], {k: v for k, v in cfg.items() if k not in ("type", "priority")}, path
            )


def build_hooks(recipe: Recipe, progress: bool | None = None) -> list[Hook]:
    """The hooks a recipe asks for, built from its sections; progress bars when `progress`
    (None: when stdout is a terminal)."""
    hooks: list[Hook] = [ScheduleHook(recipe.lr_config, recipe.momentum_config, iter_based=not recipe.by_epoch)]
    if recipe.freeze.epochs:
        hooks.append(FreezeHook(recipe.freeze.modules, recipe.freeze.epochs, recipe.freeze.batch_size))
    ev = recipe.evaluation
    if not any(phase == "val" for phase, _ in recipe.workflow):
        hooks.append(EvalHook(ev.interval, ev.start, ev.by_epoch if recipe.by_epoch else False))
    if recipe.ema.enable:
        hooks.append(EMAHook(recipe.ema.decay, recipe.ema.warmup, recipe.ema.update_interval, recipe.ema.eval))
    if ev.save_best:
        hooks.append(SaveBestHook(ev.save_best, ev.rule, ev.greater_keys, ev.less_keys))
    hooks += [_logger_hook(cfg, recipe, f"log_config.hooks[{i}]") for i, cfg in enumerate(recipe.log_config.hooks)]
    hooks += [_custom_hook(cfg, f"custom_hooks[{i}]") for i, cfg in enumerate(recipe.custom_hooks)]
    if progress_enabled(progress):
        hooks += [TrainProgressHook(), ValProgressHook()]
    return hooks
