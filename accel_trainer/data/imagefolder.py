"""An ImageFolder whose problems name the file: torchvision's class folders, with an empty class
folder, a file that is not a regular one (a FIFO named `x.png`) and an unreadable image reported as
one line, or skipped and counted."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS, has_file_allowed_extension

from ..errors import RecipeError
from .images import UNREADABLE_ERRORS, is_regular_file, read_rgb

logger = logging.getLogger(__name__)

# The label of a sample whose image could not be read (skip_bad_images); the task leaves it out.
UNREADABLE = -1


class CheckedImageFolder(ImageFolder):
    """`root/<class>/<image>` with torchvision's rules. Image names that are not regular files are
    left out up front (`num_skipped`, with skip_bad_images); an unreadable image yields
    `(None, UNREADABLE)`, which the task counts."""

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
        irregular: list[str] = []

        def is_valid_file(path: str) -> bool:
            if not has_file_allowed_extension(path, IMG_EXTENSIONS):
                return False
            if is_regular_file(path):
                return True
            irregular.append(path)
            return False

        super().__init__(
            str(root), transform=transform, loader=read_rgb, is_valid_file=is_valid_file, allow_empty=skip_bad_images
        )
        if irregular and not skip_bad_images:
            raise RecipeError(
                f"{key} = {root}: {irregular[0]} is not a regular file ({len(irregular)} such); "
                "only regular files are read as images; remove it, or set data.skip_bad_images = true to skip it"
            )
        if irregular:
            logger.warning(
                "skipping %d image names that are not regular files (first: %s)", len(irregular), irregular[0]
            )
        self.skip_bad_images = skip_bad_images
        self.num_skipped = len(irregular)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        path, target = self.samples[index]
        try:
            sample = self.loader(path)
        except UNREADABLE_ERRORS as exc:
            if not self.skip_bad_images:
                raise RecipeError(
                    f"cannot read image {path}: {exc}; set data.skip_bad_images = true to skip it"
                ) from None
            logger.warning("skipping unreadable image %s: %s", path, exc)
            return None, UNREADABLE
        if self.transform is not None:
            sample = self.transform(sample)
        return sample, target
