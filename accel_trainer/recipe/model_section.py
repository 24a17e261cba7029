"""`[model]`: the timm backbone and, for detection, the torchvision head around it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from ..errors import RecipeError
from .checks import between, positive, require

# More classes than any dataset this trains on has; a typo such as 10**9 would not fit in memory.
MAX_CLASSES = 100_000
# What a timm model name looks like: an architecture and an optional pretrained tag, no path parts.
TIMM_NAME = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)?")


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
        between(self.num_classes, f"{path}.num_classes", 1, MAX_CLASSES)
        check_backbone(self.backbone, f"{path}.backbone")
        for key in ("drop_rate", "drop_path_rate"):
            require(0.0 <= getattr(self, key) < 1.0, f"{path}.{key}", getattr(self, key), "must be in [0, 1)")


def check_backbone(name: str, path: str) -> None:
    """A timm model name (`resnest50d`, `resnest50d.in1k`); hub repos and files are weights, which
    `model.pretrained` takes, so nothing path-like reaches timm here (and nothing is looked up)."""
    if TIMM_NAME.fullmatch(name):
        return
    if ":" in name or "/" in name or "\\" in name:
        raise RecipeError(
            f"{path} = {name!r} is not a timm model name: the backbone is an architecture such as "
            '"resnest50d"; a hub repo or weights file goes in model.pretrained (e.g. pretrained = "hf-hub:timm/resnest50d.in1k")'
        )
    raise RecipeError(
        f'{path} = {name!r} is not a timm model name (letters, digits, "_" and "-", and an optional ".tag"), e.g. "resnest50d"'
    )
