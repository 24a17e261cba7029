"""The typed recipe schema: one small dataclass per recipe section, checked before anything is built.

Sections keep mmcv 1.x runtime-config names and meanings. Each section checks its own values in
`check(path)` (called by `build` as the table is read); `Recipe.check` holds the rules that span
sections. Open sections whose keys depend on a chosen type (`optimizer`, `lr_config`,
`momentum_config`, hook tables) are plain tables here; their owners check them (`loading.py`).
"""

from __future__ import annotations

import copy
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
    """One split's data: an image folder (`root`), with `ann_file` for COCO or `split` (the
    `ImageSets/Main/<split>.txt` list of a VOCdevkit year folder) for VOC."""

    root: str = ""
    ann_file: str = ""
    split: str = ""


@dataclass
class AugmentCfg:
    """Training augmentation. Classification: timm's create_transform and Mixup. Detection:
    torchvision v2 box-aware transforms, mosaic and mmdet-style resizing. Defaults per task:
    `TASK_DEFAULTS`; keys of one task only: `TASK_KEYS`."""

    scale: list[float] = field(default_factory=lambda: [0.08, 1.0])
    hflip: float = 0.5
    color_jitter: float = 0.4
    auto_augment: str = "rand-m9-mstd0.5-inc1"
    mixup: float = 0.0
    cutmix: float = 0.0
    label_smoothing: float = 0.1
    mosaic: float = 0.0  # probability of a 4-image mosaic (detection)
    mosaic_epochs: int = 0  # the last N epochs train without mosaic (YOLOX's no-aug tail)
    scales: list[list[int]] = field(default_factory=list)  # mmdet img_scale list: [[long, short], ...]
    multiscale_mode: Literal["range", "value"] = "range"

    def check(self, path: str) -> None:
        require(
            len(self.scale) == 2 and 0 < self.scale[0] <= self.scale[1],
            f"{path}.scale",
            self.scale,
            "is not [min, max] with 0 < min <= max",
        )
        fraction(self.hflip, f"{path}.hflip")
        for key in ("color_jitter", "mixup", "cutmix"):
            positive(getattr(self, key), f"{path}.{key}", allow_zero=True)
        require(0.0 <= self.label_smoothing < 1.0, f"{path}.label_smoothing", self.label_smoothing, "must be in [0, 1)")
        fraction(self.mosaic, f"{path}.mosaic")
        positive(self.mosaic_epochs, f"{path}.mosaic_epochs", allow_zero=True)
        for i, pair in enumerate(self.scales):
            require(
                len(pair) == 2 and min(pair) > 0,
                f"{path}.scales[{i}]",
                pair,
                "is not [long edge, short edge] in pixels, e.g. [1333, 800]",
            )
        if self.multiscale_mode == "range":
            require(
                len(self.scales) in (0, 1, 2),
                f"{path}.scales",
                self.scales,
                "needs 2 entries, the range's ends, with multiscale_mode = \"range\" (mmdet's rule)",
            )
        if self.scales and list(self.scale) != [1.0, 1.0]:
            raise RecipeError(
                f"{path}.scales and {path}.scale (a ratio range) are two ways to resize; set one of them "
                "(mmdet allows ratio_range with a single img_scale only)"
            )

    @property
    def resizes(self) -> bool:
        """Whether training images get a resize of their own (the detector then skips its own)."""
        return bool(self.scales) or list(self.scale) != [1.0, 1.0]


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


# The 20 PASCAL VOC classes in the devkit's order: label i is VOC_CLASSES[i].
VOC_CLASSES = [
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
]


@dataclass
class DataCfg:
    type: Literal["imagefolder", "coco", "voc", "shapes"] = "imagefolder"
    img_size: int = 224
    batch_size: int = 32
    num_workers: int = 4
    crop_pct: float = 0.875
    pin_memory: bool = True
    persistent_workers: bool = False
    prefetch_factor: int = 2
    skip_bad_images: bool = False
    classes: list[str] = field(default_factory=lambda: list(VOC_CLASSES))  # VOC: label i is classes[i]
    # VOC takes a list of tables too: several VOCdevkit year folders concatenated (VOC07+12).
    train: SplitCfg | list[SplitCfg] = field(default_factory=SplitCfg)
    val: SplitCfg | list[SplitCfg] = field(default_factory=SplitCfg)
    augment: AugmentCfg = field(default_factory=AugmentCfg)
    shapes: ShapesCfg = field(default_factory=ShapesCfg)

    def check(self, path: str) -> None:
        positive(self.batch_size, f"{path}.batch_size")
        positive(self.img_size, f"{path}.img_size")
        positive(self.num_workers, f"{path}.num_workers", allow_zero=True)
        require(0.0 < self.crop_pct <= 1.0, f"{path}.crop_pct", self.crop_pct, "must be in (0, 1]")
        require(
            bool(self.classes) and len(set(self.classes)) == len(self.classes),
            f"{path}.classes",
            self.classes,
            "must be a non-empty list of distinct names",
        )
        for split in ("train", "val"):
            value = getattr(self, split)
            if isinstance(value, list):
                require(
                    self.type == "voc" and bool(value),
                    f"{path}.{split}",
                    value,
                    'is a list of tables: only data.type = "voc" concatenates several roots; give one table',
                )
                for i, item in enumerate(value):
                    require(
                        bool(item.root) and bool(item.split),
                        f"{path}.{split}[{i}]",
                        to_plain(item),
                        "needs root and split",
                    )

    def splits(self, split: str) -> list[SplitCfg]:
        """`data.train` / `data.val` as a list of tables (VOC may concatenate several)."""
        value = getattr(self, split)
        return list(value) if isinstance(value, list) else [value]


@dataclass
class ModelCfg:
    """The model. Detection keys after `head` are torchvision's own names; unset means its default."""

    task: Literal["classification", "detection"] = "classification"
    backbone: str = "resnest50d"
    num_classes: int = 1000
    pretrained: bool | str = ""
    drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    head: str = "fcos"  # a name of the heads table, `tasks/heads.py` (checked there at load)
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


# Keys only one task reads. Setting one on a recipe of the other task is an error (`check_used_keys`);
# the resolved recipe leaves them out (`drop_unused`), so `--print-recipe` output loads again.
TASK_KEYS: dict[str, str] = {
    "model.drop_rate": "classification",
    "data.img_size": "classification",
    "data.crop_pct": "classification",
    **{f"data.augment.{k}": "classification" for k in ("auto_augment", "mixup", "cutmix", "label_smoothing")},
    **{
        f"model.{k}": "detection"
        for k in (
            "head",
            "frozen_stages",
            "norm_eval",
            "min_size",
            "max_size",
            "score_thresh",
            "nms_thresh",
            "detections_per_img",
            "topk_candidates",
        )
    },
    **{f"data.augment.{k}": "detection" for k in ("mosaic", "mosaic_epochs", "scales", "multiscale_mode")},
    "evaluation.iou_thr": "detection",
    "evaluation.eval_mode": "detection",
}
# Keys of one detection metric: VOC AP's.
VOC_AP_KEYS = ("evaluation.iou_thr", "evaluation.eval_mode")
DETECTION_METRICS = ("", "bbox", "mAP")
# Keys only some data types read; SPLIT_KEYS apply to each table of data.train / data.val.
DATA_TYPE_KEYS: dict[str, tuple[str, ...]] = {"data.classes": ("voc",)}
SPLIT_KEYS: dict[str, tuple[str, ...]] = {"ann_file": ("coco",), "split": ("voc",)}
# Where the data comes from: the built-in set's size, or the real data's folders. Recipes switch
# between the two by data.type (a COCO recipe on det.toml inherits [data.shapes]), so the unused one
# is accepted and left out of the resolved recipe instead of refused.
DATA_SOURCE_KEYS: dict[str, tuple[str, ...]] = {
    "data.shapes": ("shapes",),
    "data.train": ("imagefolder", "coco", "voc"),
    "data.val": ("imagefolder", "coco", "voc"),
}
# Defaults that differ from the dataclass defaults (timm's, for classification). Detection takes
# mmdet's: 2 images per GPU and 2 workers (samples_per_gpu / workers_per_gpu), 80 COCO classes, no
# rescale (the detector resizes to min_size / max_size), flip 0.5, no colour jitter.
TASK_DEFAULTS: dict[str, dict[str, Any]] = {
    "classification": {},
    "detection": {
        "model.num_classes": 80,
        "data.batch_size": 2,
        "data.num_workers": 2,
        "data.augment.scale": [1.0, 1.0],
        "data.augment.color_jitter": 0.0,
        # Only when the recipe has no [lr_config] at all: mmdet's schedules all begin with this
        # linear warmup, and a detector trained from scratch at a usual constant lr without it
        # barely learns (shapes data, AdamW 2e-3, 8 epochs: bbox_mAP 0.02 without, 0.16 by epoch 3 with).
        "lr_config": {"policy": "fixed", "warmup": "linear", "warmup_iters": 500, "warmup_ratio": 0.001},
    },
}
# VOC split lists read when a table leaves `split` out (mmdet's VOC configs: trainval / test).
VOC_SPLITS = {"train": "trainval", "val": "test"}


def _lookup(raw: dict, dotted: str) -> tuple[bool, Any]:
    table: Any = raw
    for part in dotted.split("."):
        if not isinstance(table, dict) or part not in table:
            return False, None
        table = table[part]
    return True, table


def _choice(raw: dict, dotted: str, cls: type, name: str) -> str | None:
    """The recipe's task or data.type when it is a valid one (else the schema reports it later)."""
    found, value = _lookup(raw, dotted)
    allowed = typing.get_args(typing.get_type_hints(cls)[name])
    value = value if found else getattr(cls(), name)
    return value if value in allowed else None


def _split_tables(raw: dict) -> list[tuple[str, dict]]:
    """(path, table) for each table under data.train / data.val (a table or a VOC list of them)."""
    out = []
    data: dict = raw["data"] if isinstance(raw.get("data"), dict) else {}
    for split in ("train", "val"):
        value = data.get(split)
        if isinstance(value, dict):
            out.append((f"data.{split}", value))
        elif isinstance(value, list):
            out += [(f"data.{split}[{i}]", t) for i, t in enumerate(value) if isinstance(t, dict)]
    return out


def _unused(raw: dict, sources: bool = False) -> list[tuple[str, str]]:
    """(key, why) for every key present in `raw` that the recipe's task or data.type does not read
    (with `sources`, also the unused one of [data.shapes] and data.train / data.val)."""
    task = _choice(raw, "model.task", ModelCfg, "task")
    data_type = _choice(raw, "data.type", DataCfg, "type")
    out = []
    for key, owner in TASK_KEYS.items():
        if task and owner != task and _lookup(raw, key)[0]:
            out.append((key, f'task = "{task}" ({owner} only)'))
    metric = _lookup(raw, "evaluation.metric")[1] or ""
    if task == "detection" and metric != "mAP":
        out += [
            (key, f'evaluation.metric = "{metric}" (metric = "mAP" only)')
            for key in VOC_AP_KEYS
            if _lookup(raw, key)[0]
        ]
    if data_type:
        for key, types_ in {**DATA_TYPE_KEYS, **(DATA_SOURCE_KEYS if sources else {})}.items():
            if data_type not in types_ and _lookup(raw, key)[0]:
                out.append((key, f'data.type = "{data_type}" ({", ".join(types_)} only)'))
        if data_type in DATA_SOURCE_KEYS["data.train"]:
            for path, table in _split_tables(raw):
                for key, types_ in SPLIT_KEYS.items():
                    if data_type not in types_ and key in table:
                        out.append((f"{path}.{key}", f'data.type = "{data_type}" ({", ".join(types_)} only)'))
    return out


def check_used_keys(raw: dict) -> None:
    """Refuse a key the user set (in the recipe, a base or --set) that this recipe never reads.

    Runs on the merged TOML before defaults are filled in, so inherited defaults never trigger it.
    """
    for key, why in _unused(raw):
        raise RecipeError(f"{key}: not used by {why}; remove it")


def fill_task_defaults(raw: dict) -> dict:
    """A copy of `raw` with the defaults of its task and data type filled in where it sets nothing."""
    out = copy.deepcopy(raw)
    if _choice(out, "data.type", DataCfg, "type") == "voc":
        data = out.setdefault("data", {})
        for split, name in VOC_SPLITS.items():
            value = data.setdefault(split, {})
            for table in value if isinstance(value, list) else [value]:
                if isinstance(table, dict):
                    table.setdefault("split", name)
        classes = data.get("classes", VOC_CLASSES)
        if isinstance(out.setdefault("model", {}), dict) and isinstance(classes, list):
            out["model"].setdefault("num_classes", len(classes))  # label i is classes[i]
    task = _choice(out, "model.task", ModelCfg, "task") or "classification"
    for dotted, value in TASK_DEFAULTS[task].items():
        *parents, leaf = dotted.split(".")
        table = out
        for part in parents:
            table = table.setdefault(part, {})
            if not isinstance(table, dict):
                break
        else:
            table.setdefault(leaf, copy.deepcopy(value))
    return out


def drop_unused(plain: dict) -> dict:
    """`plain` (a resolved recipe as data) without the keys its task and data type never read."""
    out = copy.deepcopy(plain)
    for key, _ in _unused(out, sources=True):
        parts = re.split(r"\.|(?=\[)", key)
        table: Any = out
        for part in parts[:-1]:
            table = table[int(part[1:-1])] if part.startswith("[") else table[part]
        del table[parts[-1]]
    return out


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
        require(
            math.isfinite(self.max_norm) and self.max_norm > 0,
            f"{path}.max_norm",
            self.max_norm,
            "must be a finite number > 0, e.g. 35",
        )
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
    metric: str = ""  # detection: "bbox" (COCO mAP, the default) or "mAP" (VOC AP)
    iou_thr: float = 0.5  # VOC AP (metric = "mAP")
    eval_mode: Literal["", "11points", "area"] = ""  # VOC AP; "": 11points for VOC2007 val data, else area
    save_best: str = ""
    rule: Literal["", "greater", "less"] = ""
    greater_keys: list[str] = field(default_factory=list)
    less_keys: list[str] = field(default_factory=list)
    # COCO bbox metrics: "auto" is faster_coco_eval when installed, else pycocotools (same keys and numbers).
    backend: Literal["auto", "pycocotools", "faster_coco_eval"] = "auto"

    def check(self, path: str) -> None:
        positive(self.interval, f"{path}.interval")
        if self.backend == "faster_coco_eval" and importlib.util.find_spec("faster_coco_eval") is None:
            raise RecipeError(
                f'{path}.backend = "faster_coco_eval" but the package is not installed: '
                'pip install "accel_trainer[coco-fast]" (or backend = "auto")'
            )
        require(
            0.0 < self.iou_thr < 1.0, f"{path}.iou_thr", self.iou_thr, "must be between 0 and 1 (exclusive), e.g. 0.5"
        )


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
        require(
            0.0 < self.rollback_lr_factor <= 1.0,
            f"{path}.rollback_lr_factor",
            self.rollback_lr_factor,
            "must be in (0, 1], e.g. 0.5",
        )


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
    def from_dict(cls, data: dict, source: str = "", check_files: bool = True) -> Recipe:
        """Build and validate; `check_files = False` skips only the "does this path exist" checks
        (for commands that never read the data or weights, on a machine that lacks them)."""
        check_used_keys(data)
        recipe = build(cls, fill_task_defaults(data), "")
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
                    f'workflow[{i}] = {phase!r}: expected ["train" or "val", a positive count], '
                    f'e.g. workflow = [["train", 1], ["val", 1]]'
                )
        if not any(p[0] == "train" for p in self.workflow):
            raise RecipeError(f"workflow = {self.workflow!r} has no train phase; use --eval-only to only evaluate")
        allowed_data = {"classification": ("imagefolder", "shapes"), "detection": ("coco", "voc", "shapes")}[
            self.model.task
        ]
        if self.data.type not in allowed_data:
            raise RecipeError(
                f"data.type = {self.data.type!r} does not fit model.task = {self.model.task!r}; expected one of: "
                f"{', '.join(map(repr, allowed_data))}"
            )
        if self.data.type == "imagefolder":
            for split in ("train", "val"):
                if not getattr(self.data, split).root:
                    raise RecipeError(f'data.{split}.root is empty: data.type = "imagefolder" needs a folder')
        if self.model.task == "detection" and self.evaluation.metric not in DETECTION_METRICS:
            raise RecipeError(
                f"evaluation.metric = {self.evaluation.metric!r} is not a detection metric; expected "
                '"bbox" (COCO mAP) or "mAP" (VOC AP)'
            )
        aug = self.data.augment
        if aug.mosaic_epochs:
            if not self.by_epoch:
                raise RecipeError('data.augment.mosaic_epochs counts epochs; it needs runner.type = "EpochBasedRunner"')
            require(
                aug.mosaic_epochs < self.runner.max_epochs,
                "data.augment.mosaic_epochs",
                aug.mosaic_epochs,
                f"must be less than runner.max_epochs = {self.runner.max_epochs} (it turns mosaic off for the last N epochs)",
            )
            if not aug.mosaic:
                raise RecipeError(
                    "data.augment.mosaic_epochs is set but data.augment.mosaic = 0; set mosaic = P (e.g. 1.0)"
                )
        if self.freeze.epochs and not self.by_epoch:
            raise RecipeError('[freeze] counts epochs; it needs runner.type = "EpochBasedRunner"')

    def check_files(self) -> None:
        """Every data folder and file the recipe names exists, so a run fails before anything is built
        (pretrained weights are checked by `loading.load_recipe`, which knows the hub cache)."""
        if self.data.type in ("imagefolder", "coco", "voc"):
            for split in ("train", "val"):
                tables = self.data.splits(split)
                for i, cfg in enumerate(tables):
                    where = f"data.{split}[{i}]" if isinstance(getattr(self.data, split), list) else f"data.{split}"
                    if cfg.root and not Path(cfg.root).is_dir():
                        raise RecipeError(f"{where}.root: folder not found: {cfg.root}")
                    if self.data.type == "coco" and cfg.ann_file and not Path(cfg.ann_file).is_file():
                        raise RecipeError(f"{where}.ann_file: file not found: {cfg.ann_file}")
                    if self.data.type == "voc":
                        listing = Path(cfg.root) / "ImageSets" / "Main" / f"{cfg.split}.txt"
                        if not listing.is_file():
                            raise RecipeError(
                                f"{where}: split list not found: {listing} (data.{split}.split = "
                                f"{cfg.split!r} names ImageSets/Main/<split>.txt under root)"
                            )
        for key in ("load_from", "resume_from"):
            value = getattr(self, key)
            if value and not Path(value).exists():
                raise RecipeError(f"{key}: not found: {value}")

    def to_dict(self) -> dict:
        """The resolved recipe as plain TOML-able data (None values omitted)."""
        return drop_unused(to_plain(self))

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
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
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
    if (tp in (int, float) and isinstance(value, bool)) or not isinstance(value, tp):
        raise RecipeError(f"{path} = {value!r} has the wrong type: expected {_type_name(tp)}")
    return value


def build(cls: type, data: dict, path: str) -> Any:
    """Create dataclass `cls` from a dict, rejecting unknown keys and wrong types by dotted path."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    check_keys(data, fields, path)
    kwargs = {name: _check_value(hints[name], value, join_path(path, name)) for name, value in data.items()}
    missing = [
        f.name
        for f in fields.values()
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING and f.name not in kwargs
    ]
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
