"""`accel-trainer import-mmcv CONFIG.py`: an mmcv/mmdet 1.x config's runtime sections as recipe TOML.

The config is read without running it (`mmcv_config.py`). Each runtime section is converted, then
validated on its own against the recipe schema; whatever does not convert (model, data, pipelines,
distributed settings, keys without an equivalent, sections the schema rejects) is listed with its
file and line, as comments at the top of the output and on stderr.
"""

from __future__ import annotations

import argparse
import copy
import sys
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import RecipeError
from ..recipe.builder import field_names
from ..recipe.checks import join_path
from ..recipe.reading import dump_toml, merge
from ..recipe.runtime_sections import CheckpointCfg, EvaluationCfg, LogCfg
from ..recipe.training_sections import AutoScaleLrCfg, RunnerCfg
from .mmcv_config import Origin, read_mmcv_config

DESCRIPTION = "Convert an mmcv/mmdet 1.x Python config's runtime sections to recipe TOML, without running the config."


class _NotConverted(Exception):
    """A whole mmcv key has no recipe form; the message says why."""


Note = Callable[[str, str], None]

CHECKPOINT_KEYS = field_names(CheckpointCfg)
LOG_KEYS = tuple(key for key in field_names(LogCfg) if key != "hooks")
EVALUATION_KEYS = field_names(EvaluationCfg)
AUTO_SCALE_KEYS = field_names(AutoScaleLrCfg)
RUNNER_KEYS = field_names(RunnerCfg)
RUNNER_TYPES = typing.get_args(typing.get_type_hints(RunnerCfg)["type"])
FP16_HOOKS = ("Fp16OptimizerHook", "GradientCumulativeFp16OptimizerHook")
CUMULATIVE_HOOKS = ("GradientCumulativeOptimizerHook", "GradientCumulativeFp16OptimizerHook")
FP16_LOSS_SCALE = "Accelerate's fp16 scales the loss dynamically; a fixed loss_scale has no equivalent"

DATA_REASON = "datasets and pipelines are not converted; write [data] and [data.augment] in the recipe"
KNOWN_REASONS = {
    "model": "model definitions are not converted; write [model] (a timm backbone, num_classes, detection head)",
    "data": DATA_REASON,
    "dist_params": "distributed setup comes from `accelerate config` / `accelerate launch`",
    "gpu_ids": "devices come from `accelerate launch`",
    "device": "devices come from `accelerate launch`",
    "opencv_num_threads": "no equivalent setting",
    "cudnn_benchmark": "no equivalent setting",
    "find_unused_parameters": "no equivalent setting",
}
DATA_HELPERS = ("dataset_type", "data_root", "img_norm_cfg", "classes", "img_scale")


def _table(value: Any, key: str) -> dict:
    if not isinstance(value, dict):
        raise _NotConverted(f"{key} must be dict(...), got {value!r}")
    return dict(value)


def _without_none(value: Any, path: str, note: Note) -> Any:
    """TOML has no null: drop None-valued keys (the recipe default applies), noting each."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            where = join_path(path, str(key))
            if item is None:
                note(where, "None is left out (TOML has no null); the recipe default applies")
            else:
                out[key] = _without_none(item, where, note)
        return out
    if isinstance(value, list):
        return [_without_none(item, f"{path}[{i}]", note) for i, item in enumerate(value)]
    return value


def _toml_problem(partial: dict) -> str | None:
    """Why `partial` cannot be written as TOML (a None in a list, a non-string key), or None."""
    try:
        dump_toml(partial)
    except (TypeError, ValueError) as exc:
        return f"has a value TOML cannot hold ({exc})"
    return None


def _pick(cfg: dict, allowed: tuple[str, ...], key: str, note: Note, why: str) -> dict:
    """Keep `allowed` keys that are not None; note the others."""
    out = {}
    for name, value in cfg.items():
        if name in allowed:
            if value is not None:
                out[name] = value
        else:
            note(f"{key}.{name}", why)
    return out


def _optimizer(value: Any, note: Note) -> dict:
    return {"optimizer": _table(value, "optimizer")}


def _optimizer_config(value: Any, note: Note) -> dict:
    if value is None:
        return {}
    cfg = _table(value, "optimizer_config")
    out: dict = {}
    hook = cfg.pop("type", "OptimizerHook")
    grad_clip = cfg.pop("grad_clip", None)
    if grad_clip is not None:
        clip = _pick(
            _table(grad_clip, "optimizer_config.grad_clip"),
            ("max_norm", "norm_type"),
            "optimizer_config.grad_clip",
            note,
            "torch clip_grad_norm_ takes only max_norm and norm_type here",
        )
        out["optimizer_config"] = {"grad_clip": clip}
    accelerate: dict = {}
    if hook in CUMULATIVE_HOOKS:
        accelerate["gradient_accumulation_steps"] = cfg.pop("cumulative_iters", 1)
    if hook in FP16_HOOKS:
        accelerate["mixed_precision"] = "fp16"
        if "loss_scale" in cfg:
            note("optimizer_config.loss_scale", FP16_LOSS_SCALE)
            cfg.pop("loss_scale")
    elif hook not in ("OptimizerHook", *CUMULATIVE_HOOKS):
        note("optimizer_config.type", f"{hook!r} has no equivalent; the plain optimizer step is used")
    for name in cfg:
        note(f"optimizer_config.{name}", "no equivalent setting")
    if accelerate:
        out["accelerate"] = accelerate
    return out


def _lr_config(value: Any, note: Note) -> dict:
    return {"lr_config": {"policy": "fixed"} if value is None else _table(value, "lr_config")}


def _momentum_config(value: Any, note: Note) -> dict:
    return {} if value is None else {"momentum_config": _table(value, "momentum_config")}


def _workflow(value: Any, note: Note) -> dict:
    return {"workflow": value}


def _checkpoint_config(value: Any, note: Note) -> dict:
    if value is None:
        raise _NotConverted("None (no checkpoints) has no equivalent; checkpoints are always written")
    cfg = _pick(_table(value, "checkpoint_config"), CHECKPOINT_KEYS, "checkpoint_config", note, "no equivalent setting")
    interval = cfg.get("interval")
    if isinstance(interval, int) and interval <= 0:
        note(
            "checkpoint_config.interval",
            f"{cfg.pop('interval')} (never save) has no equivalent; the default interval applies",
        )
    return {"checkpoint_config": cfg}


def _logger_hooks(hooks: Any, note: Note) -> list[dict]:
    from ..hooks import LOGGER_HOOKS

    if not isinstance(hooks, list):
        raise _NotConverted(f"log_config.hooks must be a list of dict(type=...), got {hooks!r}")
    out = []
    for i, hook in enumerate(hooks):
        path = f"log_config.hooks[{i}]"
        name = hook.get("type") if isinstance(hook, dict) else None
        if name not in LOGGER_HOOKS:
            note(path, f"{name!r} is not a logger here; available: {', '.join(LOGGER_HOOKS)}")
            continue
        picked = _pick(hook, ("type", *LOG_KEYS), path, note, f"{name} takes only {', '.join(LOG_KEYS)}")
        problem = _item_problem({"log_config": {"hooks": [picked]}}, "log_config.hooks", i)
        if problem:
            note(path, problem)
        else:
            out.append(picked)
    return out


def _log_config(value: Any, note: Note) -> dict:
    cfg = _table(value, "log_config")
    hooks = cfg.pop("hooks", None)
    out = _pick(cfg, LOG_KEYS, "log_config", note, "no equivalent setting")
    if hooks is not None:
        out["hooks"] = _logger_hooks(hooks, note)
    return {"log_config": out}


def _evaluation(value: Any, note: Note) -> dict:
    cfg = _pick(
        _table(value, "evaluation"),
        EVALUATION_KEYS,
        "evaluation",
        note,
        "no equivalent: the task computes its own metrics",
    )
    metric = cfg.get("metric")
    if isinstance(metric, list):
        cfg["metric"] = str(metric[0]) if metric else ""
        for extra in metric[1:]:
            note("evaluation.metric", f"{extra!r}: one metric is kept ({cfg['metric']!r})")
    return {"evaluation": cfg}


def _runner(value: Any, note: Note) -> dict:
    cfg = _table(value, "runner")
    runner_type = cfg.get("type", "EpochBasedRunner")
    if runner_type not in RUNNER_TYPES:
        raise _NotConverted(f"type {runner_type!r} has no equivalent; expected one of {', '.join(RUNNER_TYPES)}")
    return {"runner": _pick(cfg, RUNNER_KEYS, "runner", note, "no equivalent setting")}


def _weights_path(key: str) -> Callable[[Any, Note], dict]:
    def convert(value: Any, note: Note) -> dict:
        if value is None or value == "":
            return {}
        if isinstance(value, str) and "://" in value:
            raise _NotConverted(f"{value!r}: URLs are not downloaded; download the file and set {key} to its path")
        return {key: value}

    return convert


def _auto_scale_lr(value: Any, note: Note) -> dict:
    return {
        "auto_scale_lr": _pick(
            _table(value, "auto_scale_lr"), AUTO_SCALE_KEYS, "auto_scale_lr", note, "no equivalent setting"
        )
    }


def _custom_hooks(value: Any, note: Note) -> dict:
    if not isinstance(value, list):
        raise _NotConverted(f"expected a list of dict(type=...), got {value!r}")
    kept = []
    for i, hook in enumerate(value):
        problem = _item_problem({"custom_hooks": [hook]}, "custom_hooks", i)
        if problem:
            note(f"custom_hooks[{i}]", problem)
        else:
            kept.append(hook)
    return {"custom_hooks": kept}


def _plain(key: str) -> Callable[[Any, Note], dict]:
    def convert(value: Any, note: Note) -> dict:
        return {} if value is None else {key: value}

    return convert


def _fp16(value: Any, note: Note) -> dict:
    if isinstance(value, dict):
        for name in value:
            note(f"fp16.{name}", FP16_LOSS_SCALE if name == "loss_scale" else "no equivalent setting")
    return {"accelerate": {"mixed_precision": "fp16"}}


def _seed(value: Any, note: Note) -> dict:
    return {} if value is None else {"accelerate": {"seed": value}}


CONVERTERS: dict[str, Callable[[Any, Note], dict]] = {
    "work_dir": _plain("work_dir"),
    "workflow": _workflow,
    "load_from": _weights_path("load_from"),
    "resume_from": _weights_path("resume_from"),
    "log_level": _plain("log_level"),
    "mp_start_method": _plain("mp_start_method"),
    "optimizer": _optimizer,
    "optimizer_config": _optimizer_config,
    "lr_config": _lr_config,
    "momentum_config": _momentum_config,
    "runner": _runner,
    "checkpoint_config": _checkpoint_config,
    "log_config": _log_config,
    "evaluation": _evaluation,
    "auto_scale_lr": _auto_scale_lr,
    "custom_hooks": _custom_hooks,
    "fp16": _fp16,
    "seed": _seed,
}

# a runner for checking sections on their own; the real one comes from the config or the user
_PROBE_BASE = {"data": {"type": "shapes"}, "runner": {"type": "EpochBasedRunner", "max_epochs": 1}}


def _item_problem(partial: dict, path: str, index: int) -> str | None:
    """The schema's complaint about one list item, probed alone as `path[0]`, under its real index."""
    problem = _probe(partial)
    return problem.replace(f"{path}[0]", f"{path}[{index}]") if problem else None


def _probe(partial: dict) -> str | None:
    """The schema's complaint about `partial` as a recipe's only runtime keys, or None if it is valid."""
    from ..recipe.load import LoadedRecipe

    try:
        # Paths are kept as written: they name files on the machine that will train.
        LoadedRecipe.from_dict({**_PROBE_BASE, **copy.deepcopy(partial)}, source="probe", check_files=False)
    except RecipeError as exc:
        return str(exc)
    return None


def _unconverted_reason(key: str) -> str:
    if key in KNOWN_REASONS:
        return KNOWN_REASONS[key]
    if key.endswith("_pipeline") or key in DATA_HELPERS:
        return DATA_REASON
    return "no equivalent in the recipe schema"


@dataclass(frozen=True)
class Skipped:
    """One mmcv key (or part of one) that the recipe does not carry."""

    origin: Origin
    key: str
    reason: str

    def __str__(self) -> str:
        return f"{self.origin}  {self.key}: {' '.join(self.reason.split())}"


def _total_epochs(config: dict, origins: dict[str, Origin], skipped: list[Skipped]) -> None:
    """mmdet 1.x: `total_epochs` stands for an EpochBasedRunner when `runner` is absent."""
    total = config.pop("total_epochs")
    if "runner" not in config:
        config["runner"] = {"type": "EpochBasedRunner", "max_epochs": total}
        origins["runner"] = origins["total_epochs"]
    elif not isinstance(config["runner"], dict) or config["runner"].get("max_epochs") != total:
        skipped.append(Skipped(origins["total_epochs"], "total_epochs", "runner.max_epochs is used (they differ)"))


def convert_config(config: dict, origins: dict[str, Origin]) -> tuple[dict, list[Skipped]]:
    """The recipe's runtime sections for an mmcv config, and what was left out."""
    config, origins = dict(config), dict(origins)
    skipped: list[Skipped] = []
    if "total_epochs" in config:
        _total_epochs(config, origins, skipped)
    recipe: dict = {}
    for key in CONVERTERS:
        if key not in config:
            continue
        origin = origins[key]

        def note(path: str, reason: str, origin: Origin = origin) -> None:
            skipped.append(Skipped(origin, path, reason))

        try:
            partial = CONVERTERS[key](config[key], note)
        except _NotConverted as exc:
            note(key, str(exc))
            continue
        partial = {k: v for k, v in _without_none(partial, "", note).items() if v != {}}
        problem = (_toml_problem(partial) or _probe(partial)) if partial else None
        if problem:
            note(key, problem)
            continue
        recipe = merge(recipe, partial)
    for key in config:
        if key not in CONVERTERS:
            skipped.append(Skipped(origins[key], key, _unconverted_reason(key)))
    skipped.sort(key=lambda item: (item.origin.file, item.origin.line))
    problem = _probe(recipe)
    if problem:
        raise RecipeError(f"the converted sections do not validate together: {problem}")
    return recipe, skipped


def render(recipe: dict, skipped: list[Skipped], config_path: str, out_name: str) -> str:
    """TOML text whose leading comments say where it came from and what it left out."""
    lines = [
        f"# Runtime sections converted from {config_path} (mmcv 1.x config) by `accel-trainer import-mmcv`.",
        f'# Use it as a base: a recipe with _base_ = ["{out_name}"] adds [model] and [data]'
        + ("." if "runner" in recipe else " and [runner]."),
    ]
    if skipped:
        lines.append("# Not converted:")
        lines += [f"#   {item}" for item in skipped]
    return "\n".join(lines) + "\n\n" + dump_toml(recipe)


def import_mmcv_command(config: str, out: str | None) -> int:
    values, origins = read_mmcv_config(config)
    recipe, skipped = convert_config(values, origins)
    text = render(recipe, skipped, config, Path(out).name if out else "<this file>")
    if out:
        out_path = Path(out)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    converted = ", ".join(recipe) or "nothing"
    print(f"import-mmcv: converted {converted}" + (f"; wrote {out}" if out else ""), file=sys.stderr)
    if skipped:
        print(f"import-mmcv: not converted ({len(skipped)}):", file=sys.stderr)
        for item in skipped:
            print(f"  {item}", file=sys.stderr)
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="mmcv config .py file (its _base_ files are followed)")
    parser.add_argument("--out", help="write the recipe TOML here (default: print it)")


def run(args: argparse.Namespace) -> int:
    return import_mmcv_command(args.config, args.out)
