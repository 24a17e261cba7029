"""Loading a recipe for use: the sections' checks (`reading.read_recipe`), then each open section
parsed, once, by the component that owns it into the spec the Trainer builds from.

This module sits above the components (it calls them); the rest of `recipe/` sits below them.
Nothing a recipe names is imported here: custom hook modules load when a Trainer is built.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import naming_file
from ..hooks import HookSpecs
from ..optim import OptimizerSpec
from ..schedules import ScheduleSpec
from ..tasks.heads import check_head
from .reading import read_recipe
from .root import Recipe


@dataclass(frozen=True)
class RecipeSpecs:
    """The open sections, parsed: `[optimizer]`, `[lr_config]` with `[momentum_config]`, and
    `log_config.hooks` with `custom_hooks`."""

    optimizer: OptimizerSpec
    schedule: ScheduleSpec
    hooks: HookSpecs

    @classmethod
    def of(cls, recipe: Recipe) -> RecipeSpecs:
        """Parse (and so check) the open sections of `recipe`."""
        return cls(
            OptimizerSpec.from_config(recipe.optimizer),
            ScheduleSpec.from_config(recipe.lr_config, recipe.momentum_config, iter_based=not recipe.by_epoch),
            HookSpecs.from_recipe(recipe),
        )


@dataclass
class LoadedRecipe(Recipe):
    """A recipe checked for use, as `load_recipe` returns it: a `Recipe` with its open sections'
    `specs` (not recipe keys: `to_dict` leaves them out)."""

    specs: RecipeSpecs = field(kw_only=True, repr=False, compare=False, metadata={"internal": True})

    @classmethod
    def of(cls, recipe: Recipe) -> LoadedRecipe:
        """`recipe` with its open sections parsed and its detection head found in the heads table."""
        sections = {f.name: getattr(recipe, f.name) for f in dataclasses.fields(Recipe)}
        loaded = cls(**sections, specs=RecipeSpecs.of(recipe))
        check_head(recipe.model.head)
        return loaded

    @classmethod
    def from_dict(cls, data: dict, source: str = "", check_files: bool = True) -> LoadedRecipe:
        """`Recipe.from_dict`, then the open sections parsed."""
        return cls.of(Recipe.from_dict(data, source, check_files))


def load_recipe(
    path: str | Path,
    overrides: Mapping[str, Any] | None = None,
    work_dir: str | Path | None = None,
    check_files: bool = True,
) -> LoadedRecipe:
    """Read and fully check a recipe: `--set`-style `overrides`, an optional `work_dir`, and with
    `check_files` every file and folder it names must exist and hub weights must be reachable
    (cached, or huggingface_hub online)."""
    with naming_file(path):
        recipe = LoadedRecipe.of(read_recipe(path, overrides, work_dir, check_files))
    if check_files:
        # timm answers what `pretrained` names; imported only here, so checking a recipe without
        # its files (`--print-recipe`) does not pay for it.
        from ..checkpoint.pretrained import check_available

        check_available(recipe.model.backbone, recipe.model.pretrained)
    return recipe
