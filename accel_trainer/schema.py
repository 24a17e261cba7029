"""The typed recipe schema: one small dataclass per recipe section, checked before anything is built.

Sections keep mmcv 1.x runtime-config names and meanings. Open sections whose keys depend on a
chosen type (`optimizer`, `lr_config`, `momentum_config`, hook tables) are plain dicts here and
are checked by the component that owns them (`optim.py`, `schedules.py`, `hooks/`).
"""
from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

from .errors import RecipeError, check_keys, join_path


@dataclass
class SplitCfg:
    root: str = ""
    ann_file: str = ""


@dataclass
class AugmentCfg:
    """Training transforms (timm.data.create_transform) and batch mixing (timm Mixup)."""

    scale: list[float] = field(default_factory=lambda: [0.08, 1.0])
    hflip: float = 0.5
    color_jitter: float = 0.4
    auto_augment: str = "rand-m9-mstd0.5-inc1"
    mixup: float = 0.0
    cutmix: float = 0.0
    label_smoothing: float = 0.1


@dataclass
class ShapesCfg:
    """Size of the built-in synthetic set (`data.type = "shapes"`)."""

    num_train: int = 512
    num_val: int = 128
    image_size: int = 64
    seed: int = 0


@dataclass
class DataCfg:
    type: Literal["imagefolder", "coco", "shapes"] = "imagefolder"
    img_size: int = 224
    batch_size: int = 32
    num_workers: int = 4
    crop_pct: float = 0.875
    pin_memory: bool = True
    persistent_workers: bool = False
    prefetch_factor: int = 2
    skip_bad_images: bool = False
    train: SplitCfg = field(default_factory=SplitCfg)
    val: SplitCfg = field(default_factory=SplitCfg)
    augment: AugmentCfg = field(default_factory=AugmentCfg)
    shapes: ShapesCfg = field(default_factory=ShapesCfg)


@dataclass
class ModelCfg:
    """The model. Detection keys after `head` are torchvision's own names; unset means its default."""

    task: Literal["classification", "detection"] = "classification"
    backbone: str = "resnest50d"
    num_classes: int = 1000
    pretrained: str = ""
    drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    head: Literal["fcos", "retinanet", "faster_rcnn"] = "fcos"
    frozen_stages: int = -1
    norm_eval: bool = False
    min_size: int = 800
    max_size: int = 1333
    score_thresh: float | None = None
    nms_thresh: float | None = None
    detections_per_img: int | None = None
    topk_candidates: int | None = None


@dataclass
class RunnerCfg:
    type: Literal["EpochBasedRunner", "IterBasedRunner"] = "EpochBasedRunner"
    max_epochs: int = 0
    max_iters: int = 0


@dataclass
class OptimizerCfg:
    grad_clip: dict | None = None


@dataclass
class CheckpointCfg:
    interval: int = 5
    by_epoch: bool | None = None  # unset: follows the runner, as mmcv's IterBasedRunner defaults it
    save_optimizer: bool = True
    out_dir: str = ""
    max_keep_ckpts: int = -1
    save_last: bool = True


@dataclass
class LogCfg:
    interval: int = 50
    hooks: list[dict] = field(default_factory=lambda: [{"type": "TextLoggerHook"}])
    ignore_last: bool = True
    reset_flag: bool = False
    by_epoch: bool | None = None  # unset: follows the runner


@dataclass
class EvaluationCfg:
    interval: int = 1
    start: int | None = None
    by_epoch: bool = True
    metric: str = ""
    save_best: str = ""
    rule: Literal["", "greater", "less"] = ""
    greater_keys: list[str] = field(default_factory=list)
    less_keys: list[str] = field(default_factory=list)


@dataclass
class AutoScaleLrCfg:
    enable: bool = False
    base_batch_size: int = 16


@dataclass
class LoadOptionsCfg:
    """How `load_from` / `--load-from` weights meet the model (mmcv's load_checkpoint arguments)."""

    strict: bool = False
    revise_keys: list[list[str]] = field(default_factory=lambda: [["^module\\.", ""]])


@dataclass
class FreezeCfg:
    """Two-stage training (the YOLO-style Freeze_Train): `modules` frozen for epochs [0, epochs)."""

    modules: list[str] = field(default_factory=list)
    epochs: int = 0
    batch_size: int = 0


@dataclass
class EmaCfg:
    """An exponential moving average of the weights (timm ModelEmaV3), see `hooks/ema.py`."""

    enable: bool = False
    decay: float = 0.9998
    warmup: bool = True  # timm's decay warmup over optimizer steps: min(decay, 1 - (1 + step) ** -2/3)
    update_interval: int = 1  # optimizer steps between updates
    eval: bool = True  # val metrics are the EMA's; the raw model's come as raw_<key>


@dataclass
class NanGuardCfg:
    """What a non-finite loss or gradient does (checked every optimizer step, see `step_guard.py`)."""

    action: Literal["stop", "skip", "rollback"] = "stop"
    max_skips: int = 3  # skip: non-finite steps in a row before stopping; rollback: rollbacks per run
    rollback_lr_factor: float = 0.5  # rollback: lr multiplier applied after each rollback

    def check(self) -> None:
        """Range checks of this section (the types are checked by `build`)."""
        if self.max_skips < 1:
            raise RecipeError(f"nan_guard.max_skips = {self.max_skips!r} must be >= 1")
        if not 0.0 < self.rollback_lr_factor <= 1.0:
            raise RecipeError(f"nan_guard.rollback_lr_factor = {self.rollback_lr_factor!r} must be in (0, 1], e.g. 0.5")


@dataclass
class AccelerateCfg:
    # unset: the launcher's choice (`accelerate config` file or --mixed_precision), else "no"
    mixed_precision: Literal["no", "fp16", "bf16"] | None = None
    gradient_accumulation_steps: int = 1
    seed: int = 0
    deterministic: bool = False
    cpu: bool = False
    sync_bn: bool = False  # BatchNorm -> SyncBatchNorm when several GPU processes train
    channels_last: bool = False  # model weights and image batches in NHWC: faster convs on tensor cores
    compile: bool = False  # torch.compile the model (Accelerate's dynamo plugin, inductor backend)
    cpu_threads: int = 0  # CPU runs: torch threads per process; 0 = this machine's cores shared by its processes


@dataclass
class Recipe:
    """A whole, validated recipe. `source` is the file it came from (for messages)."""

    work_dir: str = ""
    workflow: list[list] = field(default_factory=lambda: [["train", 1]])
    model: ModelCfg = field(default_factory=ModelCfg)
    data: DataCfg = field(default_factory=DataCfg)
    optimizer: dict = field(default_factory=lambda: {"type": "SGD", "lr": 0.01})
    optimizer_config: OptimizerCfg = field(default_factory=OptimizerCfg)
    lr_config: dict = field(default_factory=lambda: {"policy": "fixed"})
    momentum_config: dict = field(default_factory=dict)
    checkpoint_config: CheckpointCfg = field(default_factory=CheckpointCfg)
    log_config: LogCfg = field(default_factory=LogCfg)
    evaluation: EvaluationCfg = field(default_factory=EvaluationCfg)
    runner: RunnerCfg = field(default_factory=RunnerCfg)
    load_from: str = ""
    resume_from: str = ""
    load_options: LoadOptionsCfg = field(default_factory=LoadOptionsCfg)
    auto_scale_lr: AutoScaleLrCfg = field(default_factory=AutoScaleLrCfg)
    custom_hooks: list[dict] = field(default_factory=list)
    accelerate: AccelerateCfg = field(default_factory=AccelerateCfg)
    freeze: FreezeCfg = field(default_factory=FreezeCfg)
    ema: EmaCfg = field(default_factory=EmaCfg)
    nan_guard: NanGuardCfg = field(default_factory=NanGuardCfg)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    mp_start_method: Literal["fork", "spawn", "forkserver"] = "fork"
    source: str = field(default="", metadata={"internal": True})

    @classmethod
    def from_dict(cls, data: dict, source: str = "", check_files: bool = True) -> "Recipe":
        """Build and validate; `check_files = False` skips only the "does this path exist" checks
        (for commands that never read the data or weights, on a machine that lacks them)."""
        recipe = build(cls, data, "")
        recipe.source = source
        check_recipe(recipe)
        recipe.nan_guard.check()
        if check_files:
            check_recipe_files(recipe)
        return recipe

    def to_dict(self) -> dict:
        """The resolved recipe as plain TOML-able data (None values omitted)."""
        return to_plain(self)

    @property
    def by_epoch(self) -> bool:
        return self.runner.type == "EpochBasedRunner"


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (list, dict):
        return getattr(tp, "__name__", str(tp)) if origin is None else str(tp).replace("typing.", "")
    if dataclasses.is_dataclass(tp):
        return "a table"
    return getattr(tp, "__name__", str(tp))


def _check_value(tp: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        options = [a for a in typing.get_args(tp) if a is not type(None)]
        return _check_value(options[0], value, path)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise RecipeError(f"{path} must be a table, got {value!r}")
        return build(tp, value, path)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            from .errors import did_you_mean

            raise RecipeError(
                f"{path} = {value!r} is not allowed{did_you_mean(str(value), map(str, allowed))}; "
                f"expected one of: {', '.join(map(repr, allowed))}"
            )
        return value
    if origin is list:
        if not isinstance(value, list):
            raise RecipeError(f"{path} must be a list, got {value!r}")
        (item_tp,) = typing.get_args(tp) or (Any,)
        return [_check_value(item_tp, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise RecipeError(f"{path} must be a table, got {value!r}")
        return value
    if tp is Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float) and isinstance(value, bool) or not isinstance(value, tp):
        raise RecipeError(f"{path} = {value!r} has the wrong type: expected {_type_name(tp)}")
    return value


def build(cls: type, data: dict, path: str) -> Any:
    """Create dataclass `cls` from a dict, rejecting unknown keys and wrong types by dotted path."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    check_keys(data, fields, path)
    kwargs = {name: _check_value(hints[name], value, join_path(path, name)) for name, value in data.items()}
    return cls(**kwargs)


def to_plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {
            f.name: to_plain(getattr(obj, f.name))
            for f in dataclasses.fields(obj)
            if not f.metadata.get("internal") and getattr(obj, f.name) is not None
        }
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, list):
        return [to_plain(v) for v in obj]
    return obj


def _positive(value: int, path: str, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        raise RecipeError(f"{path} = {value!r} must be {'>= 0' if allow_zero else '> 0'}")


def check_recipe(r: Recipe) -> None:
    """Cross-field rules and the components' own checks of their open sections."""
    for i, phase in enumerate(r.workflow):
        ok = (
            len(phase) == 2
            and phase[0] in ("train", "val")
            and isinstance(phase[1], int)
            and not isinstance(phase[1], bool)
            and phase[1] > 0
        )
        if not ok:
            raise RecipeError(
                f"workflow[{i}] = {phase!r}: expected [\"train\" or \"val\", a positive count], "
                f"e.g. workflow = [[\"train\", 1], [\"val\", 1]]"
            )
    if not any(p[0] == "train" for p in r.workflow):
        raise RecipeError(f"workflow = {r.workflow!r} has no train phase; use --eval-only to only evaluate")
    if r.by_epoch:
        _positive(r.runner.max_epochs, "runner.max_epochs")
        if r.runner.max_iters:
            raise RecipeError("runner.max_iters is for IterBasedRunner; EpochBasedRunner takes runner.max_epochs")
    else:
        _positive(r.runner.max_iters, "runner.max_iters")
        if r.runner.max_epochs:
            raise RecipeError("runner.max_epochs is for EpochBasedRunner; IterBasedRunner takes runner.max_iters")
    _positive(r.data.batch_size, "data.batch_size")
    _positive(r.data.img_size, "data.img_size")
    _positive(r.data.num_workers, "data.num_workers", allow_zero=True)
    _positive(r.accelerate.gradient_accumulation_steps, "accelerate.gradient_accumulation_steps")
    _positive(r.accelerate.cpu_threads, "accelerate.cpu_threads", allow_zero=True)
    _positive(r.log_config.interval, "log_config.interval")
    _positive(r.evaluation.interval, "evaluation.interval")
    _positive(r.checkpoint_config.interval, "checkpoint_config.interval")
    _positive(r.model.num_classes, "model.num_classes")
    _positive(r.auto_scale_lr.base_batch_size, "auto_scale_lr.base_batch_size")
    if len(r.data.augment.scale) != 2:
        raise RecipeError(f"data.augment.scale = {r.data.augment.scale!r}: expected [min, max]")
    allowed_data = {"classification": ("imagefolder", "shapes"), "detection": ("coco", "shapes")}[r.model.task]
    if r.data.type not in allowed_data:
        raise RecipeError(
            f"data.type = {r.data.type!r} does not fit model.task = {r.model.task!r}; expected one of: "
            f"{', '.join(map(repr, allowed_data))}"
        )
    if r.data.type == "imagefolder":
        for split in ("train", "val"):
            if not getattr(r.data, split).root:
                raise RecipeError(f"data.{split}.root is empty: data.type = \"imagefolder\" needs a folder")
    if r.freeze.epochs:
        _positive(r.freeze.epochs, "freeze.epochs")
        _positive(r.freeze.batch_size, "freeze.batch_size", allow_zero=True)
        if not r.freeze.modules:
            raise RecipeError('freeze.epochs is set but freeze.modules is empty; e.g. modules = ["backbone"]')
        if not r.by_epoch:
            raise RecipeError("[freeze] counts epochs; it needs runner.type = \"EpochBasedRunner\"")
    if r.optimizer_config.grad_clip is not None:
        check_keys(r.optimizer_config.grad_clip, ("max_norm", "norm_type"), "optimizer_config.grad_clip")
        if "max_norm" not in r.optimizer_config.grad_clip:
            raise RecipeError("optimizer_config.grad_clip needs max_norm, e.g. grad_clip = {max_norm = 35, norm_type = 2}")
    if not 0.0 < r.ema.decay < 1.0:
        raise RecipeError(f"ema.decay = {r.ema.decay!r} must be between 0 and 1 (exclusive), e.g. 0.9998")
    _positive(r.ema.update_interval, "ema.update_interval")
    for i, pair in enumerate(r.load_options.revise_keys):
        if len(pair) != 2:
            raise RecipeError(f"load_options.revise_keys[{i}] = {pair!r}: expected [regex, replacement]")
        try:
            re.compile(pair[0])
        except re.error as exc:
            raise RecipeError(f"load_options.revise_keys[{i}]: bad regex {pair[0]!r} ({exc})") from None
    check_components(r)



def check_recipe_files(r: Recipe) -> None:
    """Every file and folder the recipe names exists, so a run fails before anything is built."""
    if r.data.type in ("imagefolder", "coco"):
        for split in ("train", "val"):
            root = getattr(r.data, split).root
            if root and not Path(root).is_dir():
                raise RecipeError(f"data.{split}.root: folder not found: {root}")
            ann_file = getattr(r.data, split).ann_file
            if r.data.type == "coco" and ann_file and not Path(ann_file).is_file():
                raise RecipeError(f"data.{split}.ann_file: file not found: {ann_file}")
    if r.model.pretrained and not Path(r.model.pretrained).is_file():
        raise RecipeError(f"model.pretrained: file not found: {r.model.pretrained}")
    for key in ("load_from", "resume_from"):
        value = getattr(r, key)
        if value and not Path(value).exists():
            raise RecipeError(f"{key}: not found: {value}")

def check_components(r: Recipe) -> None:
    """Let the owners of the open sections validate them (imported late: they pull in torch)."""
    import torch

    from . import hooks, optim, schedules

    optim.build_optimizer(torch.nn.Linear(1, 1), r.optimizer)
    schedules.LrSchedule.from_config(r.lr_config, iter_based=not r.by_epoch)
    schedules.MomentumSchedule.from_config(r.momentum_config)
    hooks.validate_hook_configs(r)
