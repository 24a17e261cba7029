"""An ImageFolder whose problems name the file: torchvision's class folders and loader, with an
empty class folder and an unreadable image reported as one line, or skipped and counted."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS

from ..errors import RecipeError

logger = logging.getLogger(__name__)

# The label of a sample whose image could not be read (skip_bad_images); the task leaves it out.
UNREADABLE = -1


class CheckedImageFolder(ImageFolder):
    """`root/<class>/<image>` with torchvision's rules. Nothing is left out up front
    (`num_skipped` = 0); an unreadable image yields `(None, UNREADABLE)`, which the task counts."""

    def __init__(
        self, root: str | Path, transform: Callable | None, *, skip_bad_images: bool = False, key: str = "root"
    ) -> None:
        root = Path(root)
        classes = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        if not classes:
            raise RecipeError(f"{key} = {root}: no class folders; an image folder holds one folder of images per class")
        empty = [
            c
            for c in classes
            if not any(f.suffix.lower() in IMG_EXTENSIONS for f in (root / c).rglob("*") if f.is_file())
        ]
        if empty and not skip_bad_images:
            raise RecipeError(
                f"{key} = {root}: class folder {empty[0]!r} holds no images ({len(empty)} such folders); "
                "add images, remove the folder, or set data.skip_bad_images = true to keep the class without samples"
            )
        if empty:
            logger.warning(
                "%s: %d class folders without images (first: %s); their classes have no samples",
                root,
                len(empty),
                empty[0],
            )
        super().__init__(str(root), transform=transform, allow_empty=skip_bad_images)
        self.skip_bad_images = skip_bad_images
        self.num_skipped = 0

    def __getitem__(self, index: int) -> tuple[Any, int]:
        path, target = self.samples[index]
        try:
            sample = self.loader(path)
        except (OSError, SyntaxError, ValueError) as exc:
            if not self.skip_bad_images:
                raise RecipeError(
                    f"cannot read image {path}: {exc}; set data.skip_bad_images = true to skip it"
                ) from None
            logger.warning("skipping unreadable image %s: %s", path, exc)
            return None, UNREADABLE
        if self.transform is not None:
            sample = self.transform(sample)
        return sample, target
