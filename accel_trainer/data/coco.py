"""COCO-format detection data: the dataset, its box-aware transforms and pycocotools bbox metrics.

Labels are contiguous (category ids sorted ascending map to 0, 1, ...), as the torchvision heads
need; `cat_ids[label]` maps a prediction back to the file's category id for COCO results.
"""
from __future__ import annotations

import contextlib
import copy
import importlib.util
import io
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from ..errors import RecipeError

logger = logging.getLogger(__name__)

# mmdet's result keys, in COCOeval.stats order.
BBOX_METRIC_KEYS = ("bbox_mAP", "bbox_mAP_50", "bbox_mAP_75", "bbox_mAP_s", "bbox_mAP_m", "bbox_mAP_l")


def load_coco(ann_file: str | Path) -> COCO:
    """The pycocotools index of an instances JSON; pycocotools' progress prints are swallowed."""
    path = Path(ann_file)
    if not path.is_file():
        raise RecipeError(f"annotation file not found: {path}")
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return COCO(str(path))
    except (ValueError, KeyError, TypeError) as exc:
        raise RecipeError(f"{path}: not a COCO instances file ({type(exc).__name__}: {exc})") from None


class CocoDetection(Dataset):
    """Images of a folder with the boxes of a COCO instances file.

    Yields `(image, target)`; `target` holds `boxes` (xyxy, float), `labels` (contiguous) and
    `image_id` (the file's id). Crowd boxes and boxes under 1 px wide or high are left out of the
    targets, as mmdet does (COCOeval still sees crowd regions through the annotation file); images
    without boxes are kept with empty targets. A missing or unreadable image raises a RecipeError
    naming it, unless `skip_bad_images`: then it is skipped with a warning (an unreadable one
    yields `(None, {"image_id": ...})`, which the task leaves out of losses and metrics).
    """

    def __init__(
        self,
        image_dir: str | Path,
        ann_file: str | Path,
        transforms: Callable | None = None,
        *,
        skip_bad_images: bool = False,
    ) -> None:
        self.image_dir = Path(image_dir)
        if not self.image_dir.is_dir():
            raise RecipeError(f"image folder not found: {self.image_dir}")
        self.coco = load_coco(ann_file)
        self.transforms = transforms
        self.skip_bad_images = skip_bad_images
        self.cat_ids = sorted(self.coco.getCatIds())
        self.classes = [self.coco.cats[c]["name"] for c in self.cat_ids]
        self.cat_to_label = {c: i for i, c in enumerate(self.cat_ids)}
        ids = sorted(self.coco.getImgIds())
        missing = [i for i in ids if not (self.image_dir / self.coco.imgs[i]["file_name"]).is_file()]
        if missing:
            names = ", ".join(self.coco.imgs[i]["file_name"] for i in missing[:3])
            if not skip_bad_images:
                raise RecipeError(
                    f"{len(missing)} images of {ann_file} are missing from {self.image_dir} (first: {names}); "
                    "set data.skip_bad_images = true to skip them"
                )
            logger.warning("skipping %d of %d images missing from %s (first: %s)", len(missing), len(ids), self.image_dir, names)
        absent = set(missing)
        self.ids = [i for i in ids if i not in absent]
        self.num_unreadable = 0

    def __len__(self) -> int:
        return len(self.ids)

    def annotations(self, image_id: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Training boxes (xyxy) and contiguous labels of one image: no crowd, no degenerate box."""
        boxes, labels = [], []
        for ann in self.coco.imgToAnns.get(image_id, []):
            x, y, w, h = ann["bbox"]
            if ann.get("iscrowd", 0) or w < 1 or h < 1:
                continue
            boxes.append([x, y, x + w, y + h])
            labels.append(self.cat_to_label[ann["category_id"]])
        return torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), torch.tensor(labels, dtype=torch.int64)

    def __getitem__(self, index: int) -> tuple[Any, dict[str, Any]]:
        image_id = self.ids[index]
        path = self.image_dir / self.coco.imgs[image_id]["file_name"]
        try:
            with Image.open(path) as raw:
                image = raw.convert("RGB")
        except (OSError, SyntaxError, ValueError) as exc:
            if not self.skip_bad_images:
                raise RecipeError(f"cannot read image {path}: {exc}; set data.skip_bad_images = true to skip it") from None
            self.num_unreadable += 1
            logger.warning("skipping unreadable image %s (%d so far in this process): %s", path, self.num_unreadable, exc)
            return None, {"image_id": image_id}
        boxes, labels = self.annotations(image_id)
        target: dict[str, Any] = {
            "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(image.height, image.width)),
            "labels": labels,
            "image_id": image_id,
        }
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        target["boxes"] = target["boxes"].as_subclass(torch.Tensor)
        return image, target


def collate_detection(batch: Sequence[tuple[Any, dict]]) -> tuple[list, list[dict]]:
    """Lists of images and targets: sizes differ, and the detector pads its own batch."""
    images, targets = zip(*batch)
    return list(images), list(targets)


class RandomRescale(v2.Transform):
    """Resize as the detector's own transform would (shorter side to `min_size`, longer side at
    most `max_size`), times a random factor from `scale_range`: mmdet's `Resize(ratio_range=...)`.

    The detector must then skip its training-time resize (`_skip_resize`), or it would undo this.
    """

    def __init__(self, min_size: int, max_size: int, scale_range: Sequence[float]) -> None:
        super().__init__()
        self.min_size = min_size
        self.max_size = max_size
        self.scale_range = (float(scale_range[0]), float(scale_range[1]))

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = v2.query_size(flat_inputs)
        ratio = torch.empty(()).uniform_(*self.scale_range).item()
        factor = ratio * min(self.min_size / min(height, width), self.max_size / max(height, width))
        return {"size": [max(1, round(height * factor)), max(1, round(width * factor))]}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return self._call_kernel(v2.functional.resize, inpt, params["size"], antialias=True)


def detection_transforms(
    *,
    train: bool,
    hflip: float = 0.0,
    color_jitter: float = 0.0,
    rescale: RandomRescale | None = None,
) -> v2.Compose:
    """PIL image + target dict -> float image in [0, 1] with the boxes moved along.

    Normalisation and the final resize stay with the detector (GeneralizedRCNNTransform), so
    val images keep their size and predictions come back in original coordinates.
    """
    steps: list[Callable] = [v2.ToImage()]
    if train:
        if hflip > 0:
            steps.append(v2.RandomHorizontalFlip(hflip))
        if color_jitter > 0:
            steps.append(v2.ColorJitter(brightness=color_jitter, contrast=color_jitter, saturation=color_jitter))
        if rescale is not None:
            steps.append(rescale)
    steps.append(v2.ToDtype(torch.float32, scale=True))
    if train:
        steps.append(v2.SanitizeBoundingBoxes(min_size=1.0))
    return v2.Compose(steps)


def _empty_results(gt: COCO) -> COCO:
    """A results index with no detections (`COCO.loadRes` rejects an empty list)."""
    dt = COCO()
    dt.dataset = {"images": copy.deepcopy(gt.dataset["images"]), "categories": copy.deepcopy(gt.dataset["categories"]), "annotations": []}
    with contextlib.redirect_stdout(io.StringIO()):
        dt.createIndex()
    return dt


def coco_backend(name: str) -> str:
    """The COCO evaluator a recipe's `evaluation.backend` means: "auto" is faster_coco_eval when installed."""
    if name == "auto":
        return "faster_coco_eval" if importlib.util.find_spec("faster_coco_eval") is not None else "pycocotools"
    return name


def coco_bbox_metrics(gt: COCO, results: list[dict], image_ids: Sequence[int],
                      backend: str = "pycocotools") -> tuple[dict[str, float], str]:
    """COCOeval (bbox) over `image_ids`: mmdet's `bbox_mAP*` fractions and the printed summary.

    `backend`: pycocotools' COCOeval, or faster_coco_eval's C++ COCOeval_faster (the same
    metrics, many times faster on a large val set) on the same annotations. Areas with no ground
    truth read -1, as COCOeval reports them.
    """
    with contextlib.redirect_stdout(io.StringIO()) as out:
        if backend == "faster_coco_eval":
            from faster_coco_eval import COCO as FasterCOCO
            from faster_coco_eval import COCOeval_faster

            gt_index = FasterCOCO(gt.dataset)
            dt = gt_index.loadRes(copy.deepcopy(results)) if results else FasterCOCO(_empty_results(gt).dataset)
            evaluator = COCOeval_faster(gt_index, dt, "bbox", print_function=print)
        else:
            dt = gt.loadRes(copy.deepcopy(results)) if results else _empty_results(gt)
            evaluator = COCOeval(gt, dt, "bbox")
        evaluator.params.imgIds = sorted(image_ids)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    summary = "\n".join(line for line in out.getvalue().splitlines() if line.strip().startswith("Average"))
    return {key: float(evaluator.stats[i]) for i, key in enumerate(BBOX_METRIC_KEYS)}, summary
