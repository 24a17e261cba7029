"""Tasks: what differs between classification and detection (model, data, loss, metrics, and
what predict, export and visualize do with them); detection's heads are the table in `heads.py`."""

from __future__ import annotations

from ..recipe.root import Recipe
from .base import Task


def build_task(recipe: Recipe) -> Task:
    """The task object for `model.task` (imported lazily: detection pulls in pycocotools)."""
    if recipe.model.task == "detection":
        from .detection import DetectionTask

        return DetectionTask(recipe)
    from .classification import ClassificationTask

    return ClassificationTask(recipe)


__all__ = ["Task", "build_task"]
