"""`[data]`: the dataset type, loader settings, the splits' folders and files, augmentation and the
built-in synthetic set. Defaults that differ per task come from `task_keys.TASK_DEFAULTS`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ..errors import RecipeError
from .builder import to_plain
from .checks import fraction, positive, require


@dataclass
class SplitCfg:
    """One split's data: an image folder (`root`), with `ann_file` for COCO or `split` (the
    `ImageSets/Main/<split>.txt` list of a VOCdevkit year folder) for VOC."""

    root: str = ""
    ann_file: str = ""
    split: str = ""


@dataclass
class AugmentCfg:
    """Training augmentation. Classification: timm's create_transform and Mixup. Detection:
    torchvision v2 box-aware transforms, mosaic and mmdet-style resizing. Defaults per task:
    `TASK_DEFAULTS`; keys of one task only: `TASK_KEYS`."""

    scale: list[float] = field(default_factory=lambda: [0.08, 1.0])
    hflip: float = 0.5
    color_jitter: float = 0.4
    auto_augment: str = "rand-m9-mstd0.5-inc1"
    mixup: float = 0.0
    cutmix: float = 0.0
    label_smoothing: float = 0.1
    mosaic: float = 0.0  # probability of a 4-image mosaic (detection)
    mosaic_epochs: int = 0  # the last N epochs train without mosaic (YOLOX's no-aug tail)
    scales: list[list[int]] = field(default_factory=list)  # mmdet img_scale list: [[long, short], ...]
    multiscale_mode: Literal["range", "value"] = "range"

    def check(self, path: str) -> None:
        require(
            len(self.scale) == 2 and 0 < self.scale[0] <= self.scale[1],
            f"{path}.scale",
            self.scale,
            "is not [min, max] with 0 < min <= max",
        )
        fraction(self.hflip, f"{path}.hflip")
        for key in ("color_jitter", "mixup", "cutmix"):
            positive(getattr(self, key), f"{path}.{key}", allow_zero=True)
        require(0.0 <= self.label_smoothing < 1.0, f"{path}.label_smoothing", self.label_smoothing, "must be in [0, 1)")
        fraction(self.mosaic, f"{path}.mosaic")
        positive(self.mosaic_epochs, f"{path}.mosaic_epochs", allow_zero=True)
        for i, pair in enumerate(self.scales):
            require(
                len(pair) == 2 and min(pair) > 0,
                f"{path}.scales[{i}]",
                pair,
                "is not [long edge, short edge] in pixels, e.g. [1333, 800]",
            )
        if self.multiscale_mode == "range":
            require(
                len(self.scales) in (0, 1, 2),
                f"{path}.scales",
                self.scales,
                "needs 2 entries, the range's ends, with multiscale_mode = \"range\" (mmdet's rule)",
            )
        if self.scales and list(self.scale) != [1.0, 1.0]:
            raise RecipeError(
                f"{path}.scales and {path}.scale (a ratio range) are two ways to resize; set one of them "
                "(mmdet allows ratio_range with a single img_scale only)"
            )

    @property
    def resizes(self) -> bool:
        """Whether training images get a resize of their own (the detector then skips its own)."""
        return bool(self.scales) or list(self.scale) != [1.0, 1.0]


@dataclass
class ShapesCfg:
    """Size of the built-in synthetic set (`data.type = "shapes"`)."""

    num_train: int = 512
    num_val: int = 128
    image_size: int = 64
    seed: int = 0

    def check(self, path: str) -> None:
        positive(self.num_train, f"{path}.num_train")
        positive(self.num_val, f"{path}.num_val")
        require(self.image_size >= 16, f"{path}.image_size", self.image_size, "must be >= 16")
        positive(self.seed, f"{path}.seed", allow_zero=True)


# The 20 PASCAL VOC classes in the devkit's order: label i is VOC_CLASSES[i].
VOC_CLASSES = [
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
]


@dataclass
class DataCfg:
    type: Literal["imagefolder", "coco", "voc", "shapes"] = "imagefolder"
    img_size: int = 224
    batch_size: int = 32
    num_workers: int = 4
    crop_pct: float = 0.875
    pin_memory: bool = True
    persistent_workers: bool = False
    prefetch_factor: int = 2
    skip_bad_images: bool = False
    classes: list[str] = field(default_factory=lambda: list(VOC_CLASSES))  # VOC: label i is classes[i]
    # VOC takes a list of tables too: several VOCdevkit year folders concatenated (VOC07+12).
    train: SplitCfg | list[SplitCfg] = field(default_factory=SplitCfg)
    val: SplitCfg | list[SplitCfg] = field(default_factory=SplitCfg)
    augment: AugmentCfg = field(default_factory=AugmentCfg)
    shapes: ShapesCfg = field(default_factory=ShapesCfg)

    def check(self, path: str) -> None:
        positive(self.batch_size, f"{path}.batch_size")
        positive(self.img_size, f"{path}.img_size")
        positive(self.num_workers, f"{path}.num_workers", allow_zero=True)
        require(0.0 < self.crop_pct <= 1.0, f"{path}.crop_pct", self.crop_pct, "must be in (0, 1]")
        require(
            bool(self.classes) and len(set(self.classes)) == len(self.classes),
            f"{path}.classes",
            self.classes,
            "must be a non-empty list of distinct names",
        )
        for split in ("train", "val"):
            value = getattr(self, split)
            if isinstance(value, list):
                require(
                    self.type == "voc" and bool(value),
                    f"{path}.{split}",
                    value,
                    'is a list of tables: only data.type = "voc" concatenates several roots; give one table',
                )
                for i, item in enumerate(value):
                    require(
                        bool(item.root) and bool(item.split),
                        f"{path}.{split}[{i}]",
                        to_plain(item),
                        "needs root and split",
                    )

    def splits(self, split: str) -> list[SplitCfg]:
        """`data.train` / `data.val` as a list of tables (VOC may concatenate several)."""
        value = getattr(self, split)
        return list(value) if isinstance(value, list) else [value]
