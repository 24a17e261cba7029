"""Which keys each task and data type reads, the defaults each task fills in, and the two uses of
those tables: refusing a key the recipe never reads, and leaving it out of the resolved recipe."""

from __future__ import annotations

import copy
import re
import typing
from collections.abc import Mapping
from typing import Any

from ..errors import RecipeError
from .data_section import VOC_CLASSES, DataCfg
from .model_section import ModelCfg

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
    """The recipe's task or data.type when it is a valid one (else building the section reports it)."""
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


def keep_table_defaults(files: dict, data: dict, overrides: Mapping[str, Any]) -> dict:
    """`data` (the recipe files' `files` with `overrides` applied) where `--set` keys create a table
    the files leave out and that the task fills in whole (a detector's `lr_config`): the task's
    default table under them, so setting one key keeps the defaults of the rest. A whole table given
    by `--set` replaces the default, as a table in a file does."""
    task = _choice(data, "model.task", ModelCfg, "task") or "classification"
    out = data
    for name, table in TASK_DEFAULTS[task].items():
        keys = [k for k in overrides if k == name or k.startswith(name + ".")]
        if isinstance(table, dict) and name not in files and keys and name not in keys:
            out = {**out, name: {**copy.deepcopy(table), **out[name]}}
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
