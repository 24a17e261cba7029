"""matplotlib is an optional extra; every plot gets it here, with one message when it is missing."""
from __future__ import annotations

import importlib.util
from typing import Any

from .errors import RecipeError

INSTALL_HINT = 'pip install "accel_trainer[plot]"'


def have_matplotlib() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def figure_class(purpose: str) -> Any:
    """matplotlib's `Figure` (drawn without pyplot, so no GUI backend is touched)."""
    try:
        from matplotlib.figure import Figure
    except ImportError as e:
        raise RecipeError(f"{purpose} needs matplotlib: {INSTALL_HINT}") from e
    return Figure
