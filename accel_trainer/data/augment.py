"""timm's train transform, with its posterize ops made safe for Pillow 13.

timm's RandAugment / AutoAugment / AugMix map their top magnitudes to posterize with 0 bits kept
(`PosterizeIncreasing` at magnitude 10, which `mstd` sampling reaches; AutoAugment's `v0` policy).
Pillow up to 12 turned 0 bits into a black image; Pillow 13 raises "bits must be between or equal
to 1 and 8" instead, so a default run (`rand-m9-mstd0.5-inc1`) dies at about one image in 400.
timm (up to 1.0.31) passes the 0 on, and bounding Pillow below 13 would hold back a library that
gets security fixes, so the op is given only what Pillow accepts: 0 bits is the black image timm's
policies were written for (what Pillow 12 gave), 1 to 8 go to timm's own op unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from PIL import Image
from timm.data import create_transform
from timm.data.auto_augment import AugmentOp

POSTERIZE_OPS = ("Posterize", "PosterizeIncreasing", "PosterizeOriginal")


def train_transform(img_size: int, **kwargs: Any) -> Callable:
    """timm's `create_transform(img_size, is_training=True, ...)` with every posterize op taking 0 bits."""
    transform = create_transform(img_size, is_training=True, **kwargs)
    for op in _augment_ops(transform):
        if op.name in POSTERIZE_OPS and not isinstance(op.aug_fn, _ZeroBitsPosterize):
            op.aug_fn = _ZeroBitsPosterize(op.aug_fn)
    return transform


class _ZeroBitsPosterize:
    """timm's posterize, with 0 (or fewer) bits kept giving a black image instead of Pillow 13's error."""

    def __init__(self, posterize: Callable) -> None:
        self.posterize = posterize

    def __call__(self, img: Image.Image, bits_to_keep: int, **kwargs: Any) -> Image.Image:
        if bits_to_keep < 1:
            return img.point(lambda _: 0)
        return self.posterize(img, bits_to_keep, **kwargs)


def _augment_ops(transform: Any) -> Iterator[AugmentOp]:
    """Every AugmentOp inside a timm transform: Compose lists, RandAugment / AugMix ops, AutoAugment policies."""
    if isinstance(transform, AugmentOp):
        yield transform
    elif isinstance(transform, (list, tuple)):  # an AutoAugment policy is a list of sub-policy lists
        for child in transform:
            yield from _augment_ops(child)
    else:
        for attr in ("transforms", "ops", "policy"):
            yield from _augment_ops(getattr(transform, attr, ()))
