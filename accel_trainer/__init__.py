"""accel_trainer: train timm classifiers and detectors from TOML recipes on top of Accelerate."""
from .errors import RecipeError
from .hooks.base import Hook
from .recipe import load_recipe
from .schema import Recipe
from .trainer import Trainer

__all__ = ["Hook", "Recipe", "RecipeError", "Trainer", "load_recipe"]
__version__ = "0.1.0"
