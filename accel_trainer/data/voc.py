"""PASCAL VOC-format detection data: VOCdevkit year folders (`Annotations/*.xml`, `JPEGImages/`,
`ImageSets/Main/<split>.txt`), one or several concatenated (VOC07+12).

Label i is `data.classes[i]`. VOC's xmin / ymin are 1-based pixel indices and xmax / ymax inclusive,
so the box is x1 = xmin - 1, y1 = ymin - 1, x2 = xmax, y2 = ymax in the pixel-edge coordinates the
rest of the trainer uses (a COCO [x, y, w, h] written as xmin = x + 1, xmax = x + w reads back
exactly). `difficult` objects are kept out of training and ignored by evaluation (`iscrowd = 1` in
the ground-truth index). The XML is read with the standard library's expat parser, which reports
line numbers; a DOCTYPE or entity declaration is refused before anything is expanded.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from xml.parsers import expat

from ..errors import RecipeError, did_you_mean
from .boxes import BoxDataset
from .coco import index_coco
from .images import UNREADABLE_ERRORS, open_image
from .mosaic import Mosaic

logger = logging.getLogger(__name__)


@dataclass
class Node:
    tag: str
    line: int
    text: str = ""
    children: list[Node] = field(default_factory=list)

    def find(self, tag: str) -> Node | None:
        return next((c for c in self.children if c.tag == tag), None)


class _Refused(Exception):
    pass


def parse_xml(path: Path) -> Node:
    """The element tree of an XML file with line numbers; malformed XML, a DOCTYPE or an entity
    declaration is a RecipeError naming the file and line."""
    parser = expat.ParserCreate()
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    root = Node("", 0)
    stack = [root]

    def start(tag: str, _attrs: dict) -> None:
        node = Node(tag, parser.CurrentLineNumber)
        stack[-1].children.append(node)
        stack.append(node)

    def end(_tag: str) -> None:
        stack.pop()

    def text(data: str) -> None:
        stack[-1].text += data

    def refuse(*_args: object) -> None:
        raise _Refused

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = text
    parser.StartDoctypeDeclHandler = refuse
    parser.EntityDeclHandler = refuse
    parser.ExternalEntityRefHandler = refuse  # type: ignore[assignment]
    try:
        parser.Parse(path.read_bytes(), True)
    except _Refused:
        raise RecipeError(
            f"{path}: line {parser.CurrentLineNumber}: DOCTYPE and entity declarations are refused "
            "(VOC annotations have none)"
        ) from None
    except expat.ExpatError as exc:
        raise RecipeError(f"{path}: line {exc.lineno}: malformed XML ({expat.ErrorString(exc.code)})") from None
    if not root.children:
        raise RecipeError(f"{path}: no XML element")
    return root.children[0]


def _number(node: Node | None, path: Path, where: Node, name: str) -> float:
    try:
        value = float(node.text) if node is not None else math.nan
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        got = repr(node.text.strip()) if node is not None else "missing"
        raise RecipeError(f"{path}: line {(node or where).line}: <{name}> is {got}; expected a number")
    return value


@dataclass
class VocImage:
    path: Path
    width: int
    height: int
    # (x1, y1, x2, y2, label, difficult) in pixel-edge coordinates
    objects: list[tuple[float, float, float, float, int, bool]]


def read_annotation(xml: Path, image: Path, classes: Sequence[str]) -> VocImage:
    """One VOC annotation, checked: known class names, numeric boxes inside the image."""
    tree = parse_xml(xml)
    size = tree.find("size")
    if size is not None and size.find("width") is not None:
        width = int(_number(size.find("width"), xml, size, "width"))
        height = int(_number(size.find("height"), xml, size, "height"))
    else:  # some converters leave <size> out: the image header says it (mmdet does the same)
        try:
            with open_image(image) as raw:
                width, height = raw.size
        except UNREADABLE_ERRORS as exc:
            raise RecipeError(f"{xml}: no <size>, and the image cannot be read: {image}: {exc}") from None
    if width <= 0 or height <= 0:
        raise RecipeError(f"{xml}: line {size.line if size else 1}: image size {width} x {height} is not positive")
    objects = []
    for obj in (c for c in tree.children if c.tag == "object"):
        name_node = obj.find("name")
        name = name_node.text.strip() if name_node is not None else ""
        if name not in classes:
            raise RecipeError(
                f"{xml}: line {(name_node or obj).line}: object name {name!r} is not in data.classes"
                f"{did_you_mean(name, classes)}"
            )
        box = obj.find("bndbox")
        if box is None:
            raise RecipeError(f"{xml}: line {obj.line}: object {name!r} has no <bndbox>")
        xmin, ymin, xmax, ymax = (_number(box.find(k), xml, box, k) for k in ("xmin", "ymin", "xmax", "ymax"))
        if not (1 <= xmin <= xmax <= width and 1 <= ymin <= ymax <= height):
            raise RecipeError(
                f"{xml}: line {box.line}: box xmin={xmin:g} ymin={ymin:g} xmax={xmax:g} ymax={ymax:g} is not inside "
                f"the {width} x {height} image (VOC boxes are 1-based: 1 <= xmin <= xmax <= width)"
            )
        difficult_node = obj.find("difficult")
        difficult = difficult_node is not None and difficult_node.text.strip() not in ("", "0")
        objects.append((xmin - 1, ymin - 1, xmax, ymax, list(classes).index(name), difficult))
    return VocImage(image, width, height, objects)


def read_split(root: Path, split: str) -> list[str]:
    """Image ids listed in `ImageSets/Main/<split>.txt` (first word of each non-empty line)."""
    listing = root / "ImageSets" / "Main" / f"{split}.txt"
    if not listing.is_file():
        raise RecipeError(f"VOC split list not found: {listing}")
    return [line.split()[0] for line in listing.read_text(encoding="utf-8").splitlines() if line.strip()]


class VocDetection(BoxDataset):
    """The images listed by `(root, split)` pairs, concatenated in order; image ids 0, 1, ...

    Every annotation is read and checked up front: a problem stops the run naming the file and
    line, or with `skip_bad_images` the image is left out and counted.
    """

    def __init__(
        self,
        sources: Sequence[tuple[str | Path, str]],
        classes: Sequence[str],
        transforms: Callable | None = None,
        *,
        skip_bad_images: bool = False,
        mosaic: Mosaic | None = None,
    ) -> None:
        super().__init__(transforms, skip_bad_images, mosaic)
        self.classes = list(classes)
        self.cat_ids = list(range(len(self.classes)))
        self.images: list[VocImage] = []
        bad: list[str] = []
        for root, split in sources:
            root = Path(root)
            for name in read_split(root, split):
                xml, image = root / "Annotations" / f"{name}.xml", root / "JPEGImages" / f"{name}.jpg"
                try:
                    if not xml.is_file():
                        raise RecipeError(f"{xml}: not found (listed in ImageSets/Main/{split}.txt)")
                    if not image.is_file():
                        raise RecipeError(f"{image}: not found (listed in ImageSets/Main/{split}.txt)")
                    self.images.append(read_annotation(xml, image, self.classes))
                except RecipeError as exc:
                    if not skip_bad_images:
                        raise RecipeError(f"{exc}; set data.skip_bad_images = true to skip the image") from None
                    bad.append(str(exc))
        self.report_skipped(", ".join(f"{r}:{s}" for r, s in sources), bad)
        self.ids = list(range(len(self.images)))
        self.coco = index_coco(voc_to_coco(self.images, self.classes))

    def image_path(self, image_id: int) -> Path:
        return self.images[image_id].path


def voc_to_coco(images: Sequence[VocImage], classes: Sequence[str]) -> dict:
    """A COCO instances dict of the VOC annotations: image ids 0, 1, ..., category id = label,
    [x, y, w, h] boxes, difficult objects as `iscrowd = 1` (COCOeval's only way to ignore a box)."""
    annotations: list[dict] = []
    for image_id, image in enumerate(images):
        for x1, y1, x2, y2, label, difficult in image.objects:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": label,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": int(difficult),
                }
            )
    return {
        "images": [
            {"id": i, "file_name": str(image.path), "width": image.width, "height": image.height}
            for i, image in enumerate(images)
        ],
        "annotations": annotations,
        "categories": [{"id": i, "name": name} for i, name in enumerate(classes)],
    }


def average_precision(recall: Sequence[float], precision: Sequence[float], mode: str) -> float:
    """VOC AP of one class: "area" is the area under the precision envelope (VOC2010 on),
    "11points" the mean of the best precision at recall >= 0, 0.1, ..., 1 (VOC2007)."""
    if mode == "11points":
        return sum(max((p for r, p in zip(recall, precision) if r >= t / 10), default=0.0) for t in range(11)) / 11
    mrec, mpre = [0.0, *recall, 1.0], [0.0, *precision, 0.0]
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = max(mpre[i], mpre[i + 1])
    return sum((mrec[i + 1] - mrec[i]) * mpre[i + 1] for i in range(len(mrec) - 1) if mrec[i + 1] != mrec[i])


def _iou(box: Sequence[float], other: Sequence[float]) -> float:
    w = min(box[2], other[2]) - max(box[0], other[0])
    h = min(box[3], other[3]) - max(box[1], other[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    return inter / ((box[2] - box[0]) * (box[3] - box[1]) + (other[2] - other[0]) * (other[3] - other[1]) - inter)


def voc_ap_metrics(
    gt,
    results: list[dict],
    image_ids: Sequence[int],
    classes: Sequence[str],
    cat_ids: Sequence[int],
    iou_thr: float = 0.5,
    mode: str = "area",
) -> tuple[dict[str, float], str]:
    """VOC-protocol AP per class and its mean over the classes that have ground truth (mmdet's
    `eval_map`): detections in descending score; one matches the unmatched true box it overlaps
    most at IoU >= iou_thr; a hit on an ignored (difficult / crowd) box counts neither way.
    `gt` is a pycocotools index ([x, y, w, h] boxes, `iscrowd` = ignored); `results` COCO results.
    Boxes are pixel-edge coordinates, so IoU needs no "+ 1" (the box already spans xmin - 1 .. xmax).
    """
    wanted = set(image_ids)
    out: dict[str, float] = {}
    lines, aps = [], []
    for name, cat in zip(classes, cat_ids):
        truth: dict[int, list[tuple[list[float], bool]]] = {}
        for ann in gt.loadAnns(gt.getAnnIds(imgIds=list(wanted), catIds=[cat])):
            x, y, w, h = ann["bbox"]
            truth.setdefault(ann["image_id"], []).append(([x, y, x + w, y + h], bool(ann.get("iscrowd", 0))))
        num_gts = sum(not ignored for boxes in truth.values() for _, ignored in boxes)
        dets = sorted(
            (r for r in results if r["category_id"] == cat and r["image_id"] in wanted), key=lambda r: -r["score"]
        )
        covered = {image_id: [False] * len(boxes) for image_id, boxes in truth.items()}
        tp, fp = [], []
        for det in dets:
            x, y, w, h = det["bbox"]
            box = [x, y, x + w, y + h]
            candidates = truth.get(det["image_id"], [])
            overlaps = [_iou(box, t) for t, _ in candidates]
            best = max(range(len(overlaps)), key=overlaps.__getitem__, default=None)
            if best is not None and overlaps[best] >= iou_thr:
                if candidates[best][1]:
                    continue
                hit = not covered[det["image_id"]][best]
                covered[det["image_id"]][best] = True
            else:
                hit = False
            tp.append(int(hit))
            fp.append(int(not hit))
        if num_gts == 0:
            continue
        recall, precision, tps, fps = [], [], 0, 0
        for t, f in zip(tp, fp):
            tps, fps = tps + t, fps + f
            recall.append(tps / num_gts)
            precision.append(tps / (tps + fps))
        ap = average_precision(recall, precision, mode)
        out[f"AP_{name}"] = ap
        aps.append(ap)
        lines.append(
            f"{name:>15}  gts {num_gts:6d}  dets {len(dets):7d}  recall {recall[-1] if recall else 0.0:.3f}  ap {ap:.3f}"
        )
    mean = sum(aps) / len(aps) if aps else 0.0
    lines.append(f"{'mAP':>15}  {mean:.4f}  (IoU {iou_thr}, {mode})")
    return {"mAP": mean, **out}, "\n".join(lines)


def default_eval_mode(roots: Sequence[str | Path]) -> str:
    """mmdet's rule: VOC2007 (every val root named VOC2007) scores with 11 points, any other year by area."""
    return "11points" if roots and all(Path(r).name == "VOC2007" for r in roots) else "area"
