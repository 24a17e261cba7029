"""What the COCO and VOC detection datasets share: ground truth as a pycocotools index, image
loading that names (or skips and counts) a damaged file, mosaic, and the box-aware transforms.

Both keep their ground truth as a pycocotools index (`coco`), boxes in pixels with x2 = x + w, and
boxes to leave out of training (COCO crowd, VOC difficult) marked `iscrowd = 1`: COCOeval ignores
exactly those, and VOC AP reads the same index.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from pycocotools.coco import COCO
from torch.utils.data import Dataset
from torchvision import tv_tensors

from ..errors import RecipeError
from .images import UNREADABLE_ERRORS, read_rgb
from .mosaic import Mosaic

logger = logging.getLogger(__name__)

Sample = tuple[Any, dict[str, Any]]


class BoxDataset(Dataset):
    """Images with xyxy boxes and contiguous labels; subclasses set `coco`, `cat_ids`, `classes`,
    `ids` (image ids in dataset order) and `image_path`.

    Yields `(image, target)`: `boxes` (float xyxy), `labels`, `image_id`. Crowd / difficult boxes and
    boxes under 1 px wide or high are left out of the targets, as mmdet does. An unreadable image
    raises a RecipeError naming it, unless `skip_bad_images`: then it yields `(None, {"image_id"})`,
    which the task leaves out (and counts). `num_skipped` counts images dropped up front.
    """

    coco: COCO
    cat_ids: list[int]
    classes: list[str]
    ids: list[int]

    def __init__(self, transforms: Callable | None, skip_bad_images: bool, mosaic: Mosaic | None) -> None:
        self.transforms = transforms
        self.skip_bad_images = skip_bad_images
        self.mosaic = mosaic
        self.num_unreadable = 0
        self.num_skipped = 0
        self.epoch = 0

    def image_path(self, image_id: int) -> Path:
        raise NotImplementedError

    def set_epoch(self, epoch: int) -> None:
        """The epoch of the sample being loaded (mosaic turns off for the last epochs)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.ids)

    def annotations(self, image_id: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Training boxes (xyxy) and contiguous labels of one image: no crowd, no degenerate box."""
        cat_to_label = {c: i for i, c in enumerate(self.cat_ids)}
        boxes, labels = [], []
        for ann in self.coco.imgToAnns.get(image_id, []):
            x, y, w, h = ann["bbox"]
            if ann.get("iscrowd", 0) or w < 1 or h < 1:
                continue
            boxes.append([x, y, x + w, y + h])
            labels.append(cat_to_label[ann["category_id"]])
        return torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), torch.tensor(labels, dtype=torch.int64)

    def load(self, index: int) -> Sample:
        """The untransformed image (PIL, RGB) and its target, or `(None, {"image_id"})` when skipped."""
        image_id = self.ids[index]
        path = self.image_path(image_id)
        try:
            image = read_rgb(path)
        except UNREADABLE_ERRORS as exc:
            if not self.skip_bad_images:
                raise RecipeError(
                    f"cannot read image {path}: {exc}; set data.skip_bad_images = true to skip it"
                ) from None
            self.num_unreadable += 1
            logger.warning(
                "skipping unreadable image %s (%d so far in this process): %s", path, self.num_unreadable, exc
            )
            return None, {"image_id": image_id}
        boxes, labels = self.annotations(image_id)
        return image, {
            "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(image.height, image.width)),
            "labels": labels,
            "image_id": image_id,
        }

    def __getitem__(self, index: int) -> Sample:
        image, target = self.load(index)
        if image is None:
            return image, target
        if self.mosaic is not None and self.mosaic.applies(self.epoch):
            image, target = self.mosaic(image, target, self._other, len(self))
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        target["boxes"] = target["boxes"].as_subclass(torch.Tensor)
        return image, target

    def _other(self, index: int) -> Sample:
        return self.load(index)

    def report_skipped(self, what: str, names: list[str]) -> None:
        """Log images left out up front (the count goes to the JSON log through the task)."""
        self.num_skipped += len(names)
        if names:
            logger.warning(
                "skipping %d images of %s: %s",
                len(names),
                what,
                "; ".join(names[:3]) + (" ..." if len(names) > 3 else ""),
            )
