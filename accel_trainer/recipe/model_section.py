"""`[model]`: the timm backbone and, for detection, the torchvision head around it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .checks import positive, require


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
