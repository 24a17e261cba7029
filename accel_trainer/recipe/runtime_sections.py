"""The sections around the loop (mmcv's runtime configs): checkpoints, logging, evaluation, how
`load_from` weights meet the model, and the Accelerate settings."""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass, field
from typing import Literal

from ..errors import RecipeError
from .checks import between, positive, require

MAX_SEED = 2**32 - 1  # accelerate's set_seed seeds numpy too, which takes no larger seed


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
        between(self.seed, f"{path}.seed", 0, MAX_SEED, " (numpy's seed range)")
        positive(self.gradient_accumulation_steps, f"{path}.gradient_accumulation_steps")
        positive(self.cpu_threads, f"{path}.cpu_threads", allow_zero=True)
