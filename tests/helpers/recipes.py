"""Small recipes of either task, written as TOML from a preset and keyword overrides, so that a test
states only where its recipe differs from the tiny one."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import tomli_w

from . import REPO

RUNTIME = REPO / "recipes/_base_/default_runtime.toml"

# A classifier on the built-in shapes data: two epochs of 8 iterations, 21 val images.
TINY_CLS: dict[str, Any] = {
    "workflow": [["train", 1], ["val", 1]],
    "model": {"backbone": "resnet10t", "num_classes": 4},
    "data": {
        "type": "shapes",
        "img_size": 32,
        "batch_size": 16,
        "num_workers": 0,
        "pin_memory": False,
        "shapes": {"num_train": 128, "num_val": 21, "image_size": 32},
        "augment": {"auto_augment": "", "color_jitter": 0.0, "scale": [0.8, 1.0], "label_smoothing": 0.0},
    },
    "optimizer": {"type": "AdamW", "lr": 0.001, "weight_decay": 0.01},
    "runner": {"type": "EpochBasedRunner", "max_epochs": 2},
    "log_config": {"interval": 4},
    "accelerate": {"seed": 0},
}

# A detector on the shapes data: one epoch of 2 iterations, 6 val images, every box kept.
TINY_DET: dict[str, Any] = {
    "workflow": [["train", 1], ["val", 1]],
    "model": {
        "task": "detection",
        "head": "fcos",
        "backbone": "resnet10t",
        "num_classes": 4,
        "min_size": 32,
        "max_size": 32,
        "score_thresh": 0.0,
    },
    "data": {
        "type": "shapes",
        "batch_size": 4,
        "num_workers": 0,
        "pin_memory": False,
        "shapes": {"num_train": 8, "num_val": 6, "image_size": 32},
        "augment": {"scale": [1.0, 1.0], "color_jitter": 0.2},
    },
    "optimizer": {"type": "SGD", "lr": 0.01, "momentum": 0.9},
    "runner": {"type": "EpochBasedRunner", "max_epochs": 1},
    "log_config": {"interval": 1},
}


def derive(preset: Mapping[str, Any], **keys: Any) -> dict[str, Any]:
    """`preset` with `keys` over it: a table merges key by key, any other value replaces, None unsets
    the key (its default applies), so a derived recipe names only what it changes."""
    out = dict(preset)
    for key, value in keys.items():
        base = out.get(key)
        out[key] = derive(base, **value) if isinstance(value, Mapping) and isinstance(base, Mapping) else value
    return out


def write_recipe(tmp_path: Path, preset: Mapping[str, Any] = TINY_CLS, name: str = "tiny.toml", **keys: Any) -> Path:
    """Write `preset` with `keys` (see `derive`) as `tmp_path / name`, on the shipped runtime defaults
    and with work_dir `tmp_path / "work"` unless the keys say otherwise."""
    recipe = derive({"_base_": [str(RUNTIME)], "work_dir": str(tmp_path / "work")}, **derive(preset, **keys))
    path = tmp_path / name
    path.write_text(tomli_w.dumps(_toml_values(recipe)))
    return path


def det_recipe(tmp_path: Path, head: str = "fcos") -> Path:
    """TINY_DET with detection head `head`, as det.toml."""
    return write_recipe(tmp_path, TINY_DET, name="det.toml", model={"head": head})


def _toml_values(value: Any) -> Any:
    """Unset (None) keys left out and paths as strings, which is all TOML can hold."""
    if isinstance(value, Mapping):
        return {k: _toml_values(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_toml_values(v) for v in value]
    return str(value) if isinstance(value, Path) else value
