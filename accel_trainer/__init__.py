"""accel_trainer: train timm classifiers and detectors from TOML recipes on top of Accelerate.

The public names load on first use, so `import accel_trainer.cli` (and `--help`) stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .errors import RecipeError
    from .hooks.base import Hook
    from .recipe.load import load_recipe
    from .recipe.root import Recipe
    from .trainer import Trainer

__all__ = ["Hook", "Recipe", "RecipeError", "Trainer", "load_recipe"]
__version__ = "0.1.0"

_PUBLIC = {
    "Hook": ".hooks.base",
    "Recipe": ".recipe.root",
    "RecipeError": ".errors",
    "Trainer": ".trainer",
    "load_recipe": ".recipe.load",
}


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'accel_trainer' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
