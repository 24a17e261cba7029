"""Loading a recipe for use: the schema checks (`recipe.py`, `schema.py`), then the components
that own the open sections (optimizer, schedules, hooks) check theirs, before anything is built.

Nothing a recipe names is imported here: custom hook modules load when a Trainer is built.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .checkpoint.pretrained import check_available
from .hooks import check_hook_configs
from .optim import check_optimizer_config
from .recipe import read_recipe
from .schedules import check_schedule_configs
from .schema import Recipe


def check_components(recipe: Recipe) -> None:
    """`[optimizer]`, `[lr_config]`, `[momentum_config]`, `log_config.hooks` and `custom_hooks`."""
    check_optimizer_config(recipe.optimizer)
    check_schedule_configs(recipe.lr_config, recipe.momentum_config, iter_based=not recipe.by_epoch)
    check_hook_configs(recipe)


def load_recipe(
    path: str | Path,
    overrides: Mapping[str, Any] | None = None,
    work_dir: str | Path | None = None,
    check_files: bool = True,
) -> Recipe:
    """Read and fully check a recipe: `--set`-style `overrides`, an optional `work_dir`, and with
    `check_files` every file and folder it names must exist and hub weights must be reachable
    (cached, or huggingface_hub online)."""
    recipe = read_recipe(path, overrides, work_dir, check_files)
    check_components(recipe)
    if check_files:
        check_available(recipe.model.backbone, recipe.model.pretrained)
    return recipe
