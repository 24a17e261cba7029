"""Class names (and COCO category ids) that travel with checkpoints and exports.

A checkpoint's `trainer_state.json` keeps them under "classes", so predicting with or exporting a
model never needs its dataset: ImageFolder's folder names, or a COCO file's category names and ids.
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger(__name__)


def dataset_classes(dataset: Any) -> dict[str, list] | None:
    """`{"names": [...], "category_ids": [...]}` from a dataset's `classes` (and `cat_ids`), if it has them."""
    names = getattr(dataset, "classes", None)
    if names is None:
        return None
    out: dict[str, list] = {"names": [str(n) for n in names]}
    cat_ids = getattr(dataset, "cat_ids", None)
    if cat_ids is not None:
        out["category_ids"] = [int(c) for c in cat_ids]
    return out


def resolve_classes(saved: dict[str, list] | None, num_classes: int, source: str) -> dict[str, list]:
    """Names and category ids for `num_classes` outputs; numbers stand in where none were saved."""
    if not saved or len(saved.get("names", [])) != num_classes:
        logger.warning("%s: no class names saved for its %d classes; labels are the class indices", source, num_classes)
        saved = {"names": [str(i) for i in range(num_classes)]}
    return {"names": list(saved["names"]), "category_ids": list(saved.get("category_ids", range(num_classes)))}
