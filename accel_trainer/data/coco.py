"""COCO-format detection data: the dataset, its box-aware transforms and pycocotools bbox metrics.

Labels are contiguous (category ids sorted ascending map to 0, 1, ...), as the torchvision heads
need; `cat_ids[label]` maps a prediction back to the file's category id for COCO results.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import io
import json
import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torchvision.transforms import v2

from ..errors import RecipeError
from ..recipe.checks import is_int, is_number
from .boxes import BoxDataset
from .mosaic import Mosaic

logger = logging.getLogger(__name__)

# mmdet's result keys, in COCOeval.stats order.
BBOX_METRIC_KEYS = ("bbox_mAP", "bbox_mAP_50", "bbox_mAP_75", "bbox_mAP_s", "bbox_mAP_m", "bbox_mAP_l")


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise RecipeError(f"annotation file not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RecipeError(f"{path}: not valid JSON ({exc})") from None
    except RecursionError:
        raise RecipeError(f"{path}: nested too deeply to read (a COCO instances file is a few levels deep)") from None
    if not isinstance(data, dict):
        raise RecipeError(
            f"{path}: not a COCO instances file (expected a JSON object with images, annotations, categories)"
        )
    return data


def _known_image(ann: Any, images: dict) -> bool:
    return isinstance(ann, dict) and is_int(ann.get("image_id")) and ann["image_id"] in images


def _bad_annotation(ann: Any, images: dict[int, dict], cat_ids: set) -> str:
    """What is wrong with one annotation ("" when nothing is). `images` maps image ids to entries."""
    if not isinstance(ann, dict):
        return "is not an object"
    bbox = ann.get("bbox")
    if "image_id" not in ann:
        return "has no image_id"
    if not is_int(ann["image_id"]):
        return f"image_id {ann['image_id']!r} is not an integer"
    if ann["image_id"] not in images:
        return f"image_id {ann['image_id']!r} is not among the images"
    if not is_int(ann.get("id")):
        return f"id {ann.get('id')!r} is not an integer" if "id" in ann else "has no id"
    if not is_int(ann.get("category_id")) or ann["category_id"] not in cat_ids:
        return f"category_id {ann.get('category_id')!r} is not among the categories {sorted(cat_ids)}"
    if not isinstance(bbox, list) or len(bbox) != 4 or not all(is_number(v) and math.isfinite(v) for v in bbox):
        return f"bbox {bbox!r} is not [x, y, width, height]" if "bbox" in ann else "has no bbox"
    if bbox[2] < 0 or bbox[3] < 0:
        return f"bbox {bbox!r} has a negative width or height"
    image = images[ann["image_id"]]
    x, y, w, h = bbox
    if "width" in image and (x >= image["width"] or y >= image["height"] or x + w <= 0 or y + h <= 0):
        return f"bbox {bbox!r} lies entirely outside its {image['width']} x {image['height']} image"
    return ""


def _short(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def check_coco(path: Path, data: dict, skip_bad_images: bool) -> tuple[dict, list[str]]:
    """The instances file checked before training: categories, images and every annotation.

    A file-level problem is always an error; an annotation that names an unknown image or category
    or has no usable bbox is an error naming it, or with `skip_bad_images` its image is left out
    (an image with half its objects unlabelled would teach the detector that they are background).
    Returns the data to index and the skipped images' descriptions.
    """
    categories = data.get("categories")
    if not isinstance(categories, list) or not categories:
        raise RecipeError(
            f'{path}: no "categories" list; a COCO instances file names its classes, '
            'e.g. "categories": [{"id": 1, "name": "person"}]'
        )
    for i, cat in enumerate(categories):
        if not isinstance(cat, dict) or not is_int(cat.get("id")) or not isinstance(cat.get("name"), str):
            raise RecipeError(f"{path}: categories[{i}] = {cat!r} needs an integer id and a name")
    images = data.get("images")
    if not isinstance(images, list):
        raise RecipeError(f'{path}: no "images" list; expected "images": [{{"id": 1, "file_name": "a.jpg"}}, ...]')
    for i, image in enumerate(images):
        if not isinstance(image, dict) or not is_int(image.get("id")) or not isinstance(image.get("file_name"), str):
            raise RecipeError(
                f"{path}: images[{i}] = {_short(image)} needs an integer id and a file_name "
                '(COCO image ids are integers, e.g. {"id": 1, "file_name": "a.jpg"})'
            )
        size: tuple[Any, Any] = (image.get("width"), image.get("height"))
        if ("width" in image or "height" in image) and not all(is_number(v) and v > 0 for v in size):
            raise RecipeError(f"{path}: images[{i}] width / height {size[0]!r} / {size[1]!r} are not positive numbers")
    annotations = data.get("annotations", [])
    if not isinstance(annotations, list):
        raise RecipeError(f'{path}: "annotations" is not a list')
    by_id, cat_ids = {image["id"]: image for image in images}, {cat["id"] for cat in categories}
    bad_images: dict[Any, str] = {}
    for i, ann in enumerate(annotations):
        problem = _bad_annotation(ann, by_id, cat_ids)
        if not problem:
            continue
        where = f"annotation id {ann['id']}" if isinstance(ann, dict) and is_int(ann.get("id")) else f"annotations[{i}]"
        if not skip_bad_images or not _known_image(ann, by_id):
            raise RecipeError(
                f"{path}: {where} {problem}"
                + ("; set data.skip_bad_images = true to skip its image" if _known_image(ann, by_id) else "")
            )
        bad_images.setdefault(ann["image_id"], f"image {ann['image_id']} ({where} {problem})")
    if not bad_images:
        return data, []
    kept = dict(data)
    kept["images"] = [image for image in images if image["id"] not in bad_images]
    kept["annotations"] = [ann for ann in annotations if ann["image_id"] not in bad_images]
    return kept, list(bad_images.values())


def index_coco(data: dict) -> COCO:
    """A pycocotools index of checked data (its progress prints swallowed)."""
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def load_coco(ann_file: str | Path) -> COCO:
    """The pycocotools index of an instances JSON, checked as `check_coco` does (no skipping)."""
    path = Path(ann_file)
    return index_coco(check_coco(path, _read_json(path), skip_bad_images=False)[0])


class CocoDetection(BoxDataset):
    """Images of a folder with the boxes of a COCO instances file (see `BoxDataset`).

    Labels are the category ids in ascending order. Missing image files and (with
    `skip_bad_images`) images with a broken annotation are left out up front and counted.
    """

    def __init__(
        self,
        image_dir: str | Path,
        ann_file: str | Path,
        transforms: Callable | None = None,
        *,
        skip_bad_images: bool = False,
        mosaic: Mosaic | None = None,
    ) -> None:
        super().__init__(transforms, skip_bad_images, mosaic)
        self.image_dir = Path(image_dir)
        if not self.image_dir.is_dir():
            raise RecipeError(f"image folder not found: {self.image_dir}")
        path = Path(ann_file)
        data, bad = check_coco(path, _read_json(path), skip_bad_images)
        self.report_skipped(str(path), bad)
        self.coco = index_coco(data)
        self.cat_ids = sorted(self.coco.getCatIds())
        self.classes = [self.coco.cats[c]["name"] for c in self.cat_ids]
        ids = sorted(self.coco.getImgIds())
        missing = [i for i in ids if not (self.image_dir / self.coco.imgs[i]["file_name"]).is_file()]
        if missing:
            names = ", ".join(self.coco.imgs[i]["file_name"] for i in missing[:3])
            if not skip_bad_images:
                raise RecipeError(
                    f"{len(missing)} images of {ann_file} are missing from {self.image_dir} (first: {names}); "
                    "set data.skip_bad_images = true to skip them"
                )
            logger.warning(
                "skipping %d of %d images missing from %s (first: %s)", len(missing), len(ids), self.image_dir, names
            )
            self.num_skipped += len(missing)
        absent = set(missing)
        self.ids = [i for i in ids if i not in absent]

    def image_path(self, image_id: int) -> Path:
        return self.image_dir / self.coco.imgs[image_id]["file_name"]


def collate_detection(batch: Sequence[tuple[Any, dict]]) -> tuple[list, list[dict]]:
    """Lists of images and targets: sizes differ, and the detector pads its own batch."""
    images, targets = zip(*batch)
    return list(images), list(targets)


class RandomRescale(v2.Transform):
    """Resize as the detector's own transform would (shorter side to `min_size`, longer side at
    most `max_size`), times a random factor from `scale_range`: mmdet's `Resize(ratio_range=...)`.
    With `scales` (mmdet's `img_scale` list of [long, short] edges) it is mmdet's multi-scale
    `Resize` instead: "range" draws the long and the short edge each uniformly (integers) between
    the list's extremes, "value" picks one entry; the image is then scaled, keeping its aspect, to
    fit both edges (mmcv's `imrescale`).

    The detector must then skip its training-time resize (`_skip_resize`), or it would undo this.
    """

    def __init__(
        self,
        min_size: int,
        max_size: int,
        scale_range: Sequence[float] = (1.0, 1.0),
        scales: Sequence[Sequence[int]] = (),
        mode: str = "range",
    ) -> None:
        super().__init__()
        self.min_size = min_size
        self.max_size = max_size
        self.scale_range = (float(scale_range[0]), float(scale_range[1]))
        self.scales = [(max(pair), min(pair)) for pair in scales]
        self.mode = mode

    def _edges(self) -> tuple[float, float]:
        """The (long, short) edges to fit this sample into."""
        if not self.scales:
            ratio = torch.empty(()).uniform_(*self.scale_range).item()
            return self.max_size * ratio, self.min_size * ratio
        if self.mode == "value" or len(self.scales) == 1:
            return self.scales[int(torch.randint(len(self.scales), ()).item())]
        longs, shorts = [p[0] for p in self.scales], [p[1] for p in self.scales]
        long = torch.randint(min(longs), max(longs) + 1, ()).item()
        short = torch.randint(min(shorts), max(shorts) + 1, ()).item()
        return long, short

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = v2.query_size(flat_inputs)
        long, short = self._edges()
        factor = min(short / min(height, width), long / max(height, width))
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
    dt.dataset = {
        "images": copy.deepcopy(gt.dataset["images"]),
        "categories": copy.deepcopy(gt.dataset["categories"]),
        "annotations": [],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        dt.createIndex()
    return dt


def coco_backend(name: str) -> str:
    """The COCO evaluator a recipe's `evaluation.backend` means: "auto" is faster_coco_eval when installed."""
    if name == "auto":
        return "faster_coco_eval" if importlib.util.find_spec("faster_coco_eval") is not None else "pycocotools"
    return name


def coco_bbox_metrics(
    gt: COCO, results: list[dict], image_ids: Sequence[int], backend: str = "pycocotools"
) -> tuple[dict[str, float], str]:
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
