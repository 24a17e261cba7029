"""`Recipe`, the whole recipe: its sections in place and the rules that span sections.

Sections keep mmcv 1.x runtime-config names and meanings; each checks its own values in
`check(path)`. Open sections whose keys depend on a chosen type (`optimizer`, `lr_config`,
`momentum_config`, hook tables) are plain tables here: the components that own them parse them
into specs when the recipe is loaded for use (`load.load_recipe`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ..errors import RecipeError
from .builder import build, check_sections, to_plain
from .checks import is_int, require
from .data_section import DataCfg
from .model_section import ModelCfg
from .runtime_sections import AccelerateCfg, CheckpointCfg, EvaluationCfg, LoadOptionsCfg, LogCfg
from .task_keys import DETECTION_METRICS, check_used_keys, drop_unused, fill_task_defaults
from .training_sections import AutoScaleLrCfg, EmaCfg, FreezeCfg, NanGuardCfg, OptimizerCfg, RunnerCfg


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
        (pretrained weights are checked by `load.load_recipe`, which knows the hub cache)."""
        if self.data.type in ("imagefolder", "coco", "voc"):
            for split in ("train", "val"):
                tables = self.data.splits(split)
                for i, cfg in enumerate(tables):
                    where = f"data.{split}[{i}]" if isinstance(getattr(self.data, split), list) else f"data.{split}"
                    if cfg.root and not Path(cfg.root).is_dir():
                        raise self._not_found(f"{where}.root", cfg.root, "folder")
                    if self.data.type == "coco" and cfg.ann_file and not Path(cfg.ann_file).is_file():
                        raise self._not_found(f"{where}.ann_file", cfg.ann_file, "file")
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
                raise self._not_found(key, value, "file or folder")

    def _not_found(self, key: str, value: str, what: str) -> RecipeError:
        """A missing path, as written and as looked for. Relative paths are read from the working
        directory (the shipped recipes' `data/...` are), unlike `_base_`, which is relative to the
        recipe: say so, and name the path beside the recipe when that one exists."""
        message = f"{key}: {what} not found: {value}"
        if Path(value).is_absolute():
            return RecipeError(message)
        message += f" (looked for {os.path.abspath(value)}; relative paths are read from the working directory"
        beside = Path(self.source).parent / value if self.source else None
        if beside is not None and beside.exists():
            message += f"; did you mean {os.path.relpath(beside)!r}? It exists relative to the recipe's folder"
        return RecipeError(message + ")")

    def to_dict(self) -> dict:
        """The resolved recipe as plain TOML-able data (None values omitted, and the run length
        of the other runner type, which `RunnerCfg.check` holds at 0)."""
        plain = drop_unused(to_plain(self))
        plain["runner"].pop("max_iters" if self.by_epoch else "max_epochs")
        return plain

    @property
    def by_epoch(self) -> bool:
        return self.runner.type == "EpochBasedRunner"
