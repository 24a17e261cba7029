"""The typed recipe schema: one small dataclass per recipe section, checked before anything is built.

Sections keep mmcv 1.x runtime-config names and meanings. Each section checks its own values in
`check(path)` (called by `build` as the table is read); `Recipe.check` holds the rules that span
sections. Open sections whose keys depend on a chosen type (`optimizer`, `lr_config`,
`momentum_config`, hook tables) are plain tables here; their owners check them (`loading.py`).
"""
from __future__ import annotations

import dataclasses
import importlib.util
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

from .errors import RecipeError, check_keys, did_you_mean, is_int, join_path


def require(ok: bool, path: str, value: Any, expected: str) -> None:
    """Raise `path = value: expected` unless `ok`."""
    if not ok:
        raise RecipeError(f"{path} = {value!r} {expected}")


def positive(value: int | float, path: str, allow_zero: bool = False) -> None:
    require(value > 0 or (allow_zero and value == 0), path, value, "must be >= 0" if allow_zero else "must be > 0")


def finite(value: float, path: str) -> None:
    require(math.isfinite(value), path, value, "must be a finite number")


def fraction(value: float, path: str) -> None:
    """A probability or ratio in [0, 1]."""
    require(0.0 <= value <= 1.0, path, value, "must be between 0 and 1")


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

    def check(self, path: str) -> None:
        require(len(self.scale) == 2 and 0 < self.scale[0] <= self.scale[1], f"{path}.scale", self.scale,
                "is not [min, max] with 0 < min <= max")
        fraction(self.hflip, f"{path}.hflip")
        for key in ("color_jitter", "mixup", "cutmix"):
            positive(getattr(self, key), f"{path}.{key}", allow_zero=True)
        require(0.0 <= self.label_smoothing < 1.0, f"{path}.label_smoothing", self.label_smoothing, "must be in [0, 1)")


@dataclass
class ShapesCfg:
    """Size of the built-in synthetic set (`data.type = "shapes"`)."""

    num_train: int = 512
    num_val: int = 128
    image_size: int = 64
    seed: int = 0

    def check(self, path: str) -> None:
        positive(self.num_train, f"{path}.num_train")
        positive(self.num_val, f"{path}.num_val")
        require(self.image_size >= 16, f"{path}.image_size", self.image_size, "must be >= 16")
        positive(self.seed, f"{path}.seed", allow_zero=True)


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

    def check(self, path: str) -> None:
        positive(self.batch_size, f"{path}.batch_size")
        positive(self.img_size, f"{path}.img_size")
        positive(self.num_workers, f"{path}.num_workers", allow_zero=True)


@dataclass
class ModelCfg:
    """The model. Detection keys after `head` are torchvision's own names; unset means its default."""

    task: Literal["classification", "detection"] = "classification"
    backbone: str = "resnest50d"
    num_classes: int = 1000
    pretrained: bool | str = ""
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

    def check(self, path: str) -> None:
        positive(self.num_classes, f"{path}.num_classes")
        for key in ("drop_rate", "drop_path_rate"):
            require(0.0 <= getattr(self, key) < 1.0, f"{path}.{key}", getattr(self, key), "must be in [0, 1)")


@dataclass
class RunnerCfg:
    type: Literal["EpochBasedRunner", "IterBasedRunner"] = "EpochBasedRunner"
    max_epochs: int = 0
    max_iters: int = 0

    def check(self, path: str) -> None:
        if self.type == "EpochBasedRunner":
            positive(self.max_epochs, f"{path}.max_epochs")
            if self.max_iters:
                raise RecipeError(f"{path}.max_iters is for IterBasedRunner; EpochBasedRunner takes {path}.max_epochs")
        else:
            positive(self.max_iters, f"{path}.max_iters")
            if self.max_epochs:
                raise RecipeError(f"{path}.max_epochs is for EpochBasedRunner; IterBasedRunner takes {path}.max_iters")


@dataclass
class GradClipCfg:
    """Gradient clipping by total norm (mmcv's `grad_clip = dict(max_norm=35, norm_type=2)`)."""

    max_norm: int | float
    norm_type: int | float = 2

    def check(self, path: str) -> None:
        require(math.isfinite(self.max_norm) and self.max_norm > 0, f"{path}.max_norm", self.max_norm,
                "must be a finite number > 0, e.g. 35")
        require(self.norm_type > 0, f"{path}.norm_type", self.norm_type, "must be > 0 (2 for the L2 norm, inf for max)")


@dataclass
class OptimizerCfg:
    grad_clip: GradClipCfg | None = None


@dataclass
class CheckpointCfg:
    interval: int = 5
    by_epoch: bool | None = None  # unset: follows the runner, as mmcv's IterBasedRunner defaults it
    save_optimizer: bool = True
    out_dir: str = ""
    max_keep_ckpts: int = -1
    save_last: bool = True

    def check(self, path: str) -> None:
        positive(self.interval, f"{path}.interval")


@dataclass
class LogCfg:
    interval: int = 50
    hooks: list[dict] = field(default_factory=lambda: [{"type": "TextLoggerHook"}])
    ignore_last: bool = True
    reset_flag: bool = False
    by_epoch: bool | None = None  # unset: follows the runner

    def check(self, path: str) -> None:
        positive(self.interval, f"{path}.interval")


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
    # COCO bbox metrics: "auto" is faster_coco_eval when installed, else pycocotools (same keys and numbers).
    backend: Literal["auto", "pycocotools", "faster_coco_eval"] = "auto"

    def check(self, path: str) -> None:
        positive(self.interval, f"{path}.interval")
        if self.backend == "faster_coco_eval" and importlib.util.find_spec("faster_coco_eval") is None:
            raise RecipeError(f'{path}.backend = "faster_coco_eval" but the package is not installed: '
                              'pip install "accel_trainer[coco-fast]" (or backend = "auto")')


@dataclass
class AutoScaleLrCfg:
    enable: bool = False
    base_batch_size: int = 16

    def check(self, path: str) -> None:
        positive(self.base_batch_size, f"{path}.base_batch_size")


@dataclass
class LoadOptionsCfg:
    """How `load_from` / `--load-from` weights meet the model (mmcv's load_checkpoint arguments)."""

    strict: bool = False
    revise_keys: list[list[str]] = field(default_factory=lambda: [["^module\\.", ""]])

    def check(self, path: str) -> None:
        for i, pair in enumerate(self.revise_keys):
            where = f"{path}.revise_keys[{i}]"
            require(len(pair) == 2, where, pair, "is not [regex, replacement]")
            try:
                re.compile(pair[0])
            except re.error as exc:
                raise RecipeError(f"{where}: bad regex {pair[0]!r} ({exc})") from None

    @property
    def key_renames(self) -> list[tuple[str, str]]:
        """`revise_keys` as (regex, replacement) pairs, the form `weights.fit_weights` takes."""
        return [(pattern, replacement) for pattern, replacement in self.revise_keys]


@dataclass
class FreezeCfg:
    """Two-stage training (the YOLO-style Freeze_Train): `modules` frozen for epochs [0, epochs)."""

    modules: list[str] = field(default_factory=list)
    epochs: int = 0
    batch_size: int = 0

    def check(self, path: str) -> None:
        positive(self.epochs, f"{path}.epochs", allow_zero=True)
        positive(self.batch_size, f"{path}.batch_size", allow_zero=True)
        if self.epochs and not self.modules:
            raise RecipeError(f'{path}.epochs is set but {path}.modules is empty; e.g. modules = ["backbone"]')


@dataclass
class EmaCfg:
    """An exponential moving average of the weights (timm ModelEmaV3), see `hooks/ema.py`."""

    enable: bool = False
    decay: float = 0.9998
    warmup: bool = True  # timm's decay warmup over optimizer steps: min(decay, 1 - (1 + step) ** -2/3)
    update_interval: int = 1  # optimizer steps between updates
    eval: bool = True  # val metrics are the EMA's; the raw model's come as raw_<key>

    def check(self, path: str) -> None:
        require(0.0 < self.decay < 1.0, f"{path}.decay", self.decay, "must be between 0 and 1 (exclusive), e.g. 0.9998")
        positive(self.update_interval, f"{path}.update_interval")


@dataclass
class NanGuardCfg:
    """What a non-finite loss or gradient does (checked every optimizer step, see `step_guard.py`)."""

    action: Literal["stop", "skip", "rollback"] = "stop"
    max_skips: int = 3  # skip: non-finite steps in a row before stopping; rollback: rollbacks per run
    rollback_lr_factor: float = 0.5  # rollback: lr multiplier applied after each rollback

    def check(self, path: str) -> None:
        positive(self.max_skips, f"{path}.max_skips")
        require(0.0 < self.rollback_lr_factor <= 1.0, f"{path}.rollback_lr_factor", self.rollback_lr_factor,
                "must be in (0, 1], e.g. 0.5")


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

    def check(self, path: str) -> None:
        positive(self.gradient_accumulation_steps, f"{path}.gradient_accumulation_steps")
        positive(self.cpu_threads, f"{path}.cpu_threads", allow_zero=True)


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
        recipe.check()
        if check_files:
            recipe.check_files()
        return recipe

    def check(self) -> None:
        """Each section's own values, then the rules that span sections."""
        check_sections(self, "")
        for i, phase in enumerate(self.workflow):
            ok = len(phase) == 2 and phase[0] in ("train", "val") and is_int(phase[1]) and phase[1] > 0
            if not ok:
                raise RecipeError(
                    f"workflow[{i}] = {phase!r}: expected [\"train\" or \"val\", a positive count], "
                    f"e.g. workflow = [[\"train\", 1], [\"val\", 1]]"
                )
        if not any(p[0] == "train" for p in self.workflow):
            raise RecipeError(f"workflow = {self.workflow!r} has no train phase; use --eval-only to only evaluate")
        allowed_data = {"classification": ("imagefolder", "shapes"), "detection": ("coco", "shapes")}[self.model.task]
        if self.data.type not in allowed_data:
            raise RecipeError(
                f"data.type = {self.data.type!r} does not fit model.task = {self.model.task!r}; expected one of: "
                f"{', '.join(map(repr, allowed_data))}"
            )
        if self.data.type == "imagefolder":
            for split in ("train", "val"):
                if not getattr(self.data, split).root:
                    raise RecipeError(f"data.{split}.root is empty: data.type = \"imagefolder\" needs a folder")
        if self.freeze.epochs and not self.by_epoch:
            raise RecipeError("[freeze] counts epochs; it needs runner.type = \"EpochBasedRunner\"")

    def check_files(self) -> None:
        """Every data folder and file the recipe names exists, so a run fails before anything is built
        (pretrained weights are checked by `loading.load_recipe`, which knows the hub cache)."""
        if self.data.type in ("imagefolder", "coco"):
            for split in ("train", "val"):
                root, ann_file = getattr(self.data, split).root, getattr(self.data, split).ann_file
                if root and not Path(root).is_dir():
                    raise RecipeError(f"data.{split}.root: folder not found: {root}")
                if self.data.type == "coco" and ann_file and not Path(ann_file).is_file():
                    raise RecipeError(f"data.{split}.ann_file: file not found: {ann_file}")
        for key in ("load_from", "resume_from"):
            value = getattr(self, key)
            if value and not Path(value).exists():
                raise RecipeError(f"{key}: not found: {value}")

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
        for option in options[:-1]:
            try:
                return _check_value(option, value, path)
            except RecipeError:
                continue
        return _check_value(options[-1], value, path)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise RecipeError(f"{path} must be a table, got {value!r}")
        return build(tp, value, path)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
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
    missing = [f.name for f in fields.values() if f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING and f.name not in kwargs]
    if missing:
        raise RecipeError(f"{path} needs {', '.join(missing)}")
    return cls(**kwargs)


def field_names(cls: type) -> tuple[str, ...]:
    """A section's keys in declaration order, for code that must accept exactly these."""
    return tuple(f.name for f in dataclasses.fields(cls) if not f.metadata.get("internal"))


def check_sections(obj: Any, path: str) -> None:
    """Run every section's own `check(path)`, nested sections after their parent, defaults included."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            where = join_path(path, f.name)
            check = getattr(value, "check", None)
            if check is not None:
                check(where)
            check_sections(value, where)


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
