"""Object detection: a detector of the heads table (`detector.py`), COCO or VOC data, and
pycocotools bbox metrics (or VOC AP) under mmdet's key names.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState
from accelerate.utils import broadcast_object_list
from pycocotools.coco import COCO
from torch import nn
from torch.nn.modules.batchnorm import _NormBase

from ..data.boxes import BoxDataset
from ..data.coco import (
    BBOX_METRIC_KEYS,
    CocoDetection,
    RandomRescale,
    coco_backend,
    coco_bbox_metrics,
    collate_detection,
    detection_transforms,
    load_coco,
)
from ..data.mosaic import Mosaic
from ..errors import RecipeError
from ..files import write_text
from ..recipe.root import Recipe
from .base import PIXEL_DECIMALS, SCORE_DECIMALS, OnnxGraph, Task
from .detector import build_detector
from .drawing import draw_boxes
from .heads import head_spec

logger = logging.getLogger(__name__)

BOX_TOLERANCE = 1e-3
# torchvision's loss names -> mmdet's, so logs read the same as the seeds'.
LOSS_NAMES = {
    "classification": "loss_cls",
    "bbox_regression": "loss_bbox",
    "bbox_ctrness": "loss_centerness",
    "loss_classifier": "loss_cls",
    "loss_box_reg": "loss_bbox",
    "loss_objectness": "loss_rpn_cls",
    "loss_rpn_box_reg": "loss_rpn_bbox",
}


@contextlib.contextmanager
def loss_mode(model: nn.Module, device: torch.device) -> Iterator[None]:
    """Training-mode forward, so torchvision returns losses, without touching any running stats.

    Every norm layer with running stats is put in eval mode, the detector resizes as in eval
    (not leaving it to a training pipeline), and the RNG (Faster R-CNN samples RoIs) runs on a
    fixed, forked seed: the val loss is deterministic and the training random stream unchanged.
    The model is left in eval mode.
    """
    transform = model.transform
    skip_resize = transform._skip_resize
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(0)
        model.train()
        for m in model.modules():
            if isinstance(m, _NormBase):
                m.eval()
        transform._skip_resize = False
        try:
            yield
        finally:
            transform._skip_resize = skip_resize
            model.eval()


class SingleImageDetector(nn.Module):
    """One CHW image in, boxes / scores / labels out, as torchvision's detectors export."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        (out,) = self.model([image])
        return out["boxes"], out["scores"], out["labels"]


TARGET_CONTRACT = (
    '(image, target): image a float CHW RGB tensor in [0, 1], target a dict with "boxes" (float '
    'tensor N x 4, x1 y1 x2 y2 in pixels), "labels" (int64 tensor N, 0 .. num_classes-1) and optionally '
    '"image_id" (int)'
)


def check_target(target: Any, num_classes: int) -> None:
    """A RecipeError naming what a detection dataset must yield, for a target that does not."""
    problem = ""
    if not isinstance(target, dict):
        problem = f"a target is a {type(target).__name__}"
    elif (
        not isinstance(target.get("boxes"), torch.Tensor) or target["boxes"].ndim != 2 or target["boxes"].shape[-1] != 4
    ):
        boxes = target.get("boxes")
        problem = f'"boxes" is {tuple(boxes.shape) if isinstance(boxes, torch.Tensor) else type(boxes).__name__}'
    elif (
        not isinstance(target.get("labels"), torch.Tensor)
        or target["labels"].dtype not in (torch.int64, torch.int32)
        or target["labels"].shape != target["boxes"].shape[:1]
    ):
        labels = target.get("labels")
        problem = (
            f'"labels" is {labels.dtype if isinstance(labels, torch.Tensor) else type(labels).__name__} '
            f"{tuple(labels.shape) if isinstance(labels, torch.Tensor) else ''} for {len(target['boxes'])} boxes"
        )
    elif len(target["labels"]) and not 0 <= int(target["labels"].min()) <= int(target["labels"].max()) < num_classes:
        problem = f'"labels" range {int(target["labels"].min())}..{int(target["labels"].max())} with model.num_classes = {num_classes}'
    if problem:
        raise RecipeError(f"detection dataset: {problem}; expected {TARGET_CONTRACT}")


def coco_from_targets(targets: list[dict[str, Any]], classes: list[str]) -> COCO:
    """A pycocotools index whose ground truth is the given targets (boxes xyxy, contiguous labels)."""
    annotations: list[dict[str, Any]] = []
    for t in targets:
        for (x1, y1, x2, y2), label in zip(t["boxes"], t["labels"]):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": t["image_id"],
                    "category_id": label,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": 0,
                }
            )
    gt = COCO()
    gt.dataset = {
        "images": [{"id": t["image_id"]} for t in targets],
        "annotations": annotations,
        "categories": [{"id": i, "name": name} for i, name in enumerate(classes)],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    return gt


class DetectionTask(Task):
    """Builds the parts of a detection run and computes its losses and COCO metrics.

    Val loss: each val batch runs twice, once in training mode with every norm layer in eval
    mode (`loss_mode`: losses, no running-stat update) and once in eval mode (detections). The
    batch's mean losses are credited to each of its images, so the reported loss is the mean
    over val images. Metrics come from pycocotools COCOeval on the val annotation file, computed
    on the main process and broadcast to every process.
    """

    metric_keys: tuple[str, ...] = BBOX_METRIC_KEYS
    data_key = "ann_file"
    collate_fn = staticmethod(collate_detection)

    def __init__(self, recipe: Recipe) -> None:
        super().__init__(recipe)
        self.head = head_spec(recipe.model.head)
        self.label_offset = self.head.label_offset
        self.rescale = recipe.data.augment.resizes
        self.voc_ap = recipe.evaluation.metric == "mAP"
        self.metric_keys = ("mAP",) if self.voc_ap else BBOX_METRIC_KEYS
        self.val_classes: list[str] = []
        self._paths: dict[str, Path] | None = None
        self._val_gt: COCO | None = None
        self.own_val = False
        self.val_cat_ids: list[int] | None = None
        self.predictions: list[dict] = []
        self.reset_metrics()

    # ----------------------------------------------------------------- parts

    def build_model(self) -> nn.Module:
        return build_detector(self.recipe.model, skip_resize=self.rescale)

    def data_paths(self) -> dict[str, Path]:
        """Image folders and annotation files of both splits (the shapes set is generated once)."""
        if self._paths is None:
            d = self.recipe.data
            if d.type == "shapes":
                from ..data.shapes import ensure_shapes_detection

                self._paths = ensure_shapes_detection(self.shapes_spec())
            elif d.type == "coco":
                self._paths = {}
                for split in ("train", "val"):
                    cfg = getattr(d, split)
                    if not cfg.root or not cfg.ann_file:
                        raise RecipeError(
                            f'data.type = "coco" needs data.{split}.root (images) and data.{split}.ann_file'
                        )
                    self._paths[f"{split}_images"] = Path(cfg.root)
                    self._paths[f"{split}_ann"] = Path(cfg.ann_file)
            else:
                raise RecipeError(
                    f'data.type = "{d.type}" is for classification; detection takes "coco", "voc" or "shapes"'
                )
        return self._paths

    def build_datasets(self) -> tuple[BoxDataset, BoxDataset]:
        d, m = self.recipe.data, self.recipe.model
        aug = d.augment
        rescale = (
            RandomRescale(m.min_size, m.max_size, aug.scale, aug.scales, aug.multiscale_mode) if self.rescale else None
        )
        train_tf = detection_transforms(train=True, hflip=aug.hflip, color_jitter=aug.color_jitter, rescale=rescale)
        val_tf = self.val_transform()
        mosaic = (
            Mosaic(aug.mosaic, m.min_size, self.recipe.runner.max_epochs - aug.mosaic_epochs)
            if aug.mosaic > 0
            else None
        )
        skip = d.skip_bad_images
        if d.type == "voc":
            from ..data.voc import VocDetection

            def sources(split: str) -> list[tuple[str, str]]:
                tables = d.splits(split)
                if not all(t.root for t in tables):
                    raise RecipeError(
                        f'data.type = "voc" needs data.{split}.root (a VOCdevkit year folder such as VOC2007)'
                    )
                return [(t.root, t.split) for t in tables]

            train: BoxDataset = VocDetection(sources("train"), d.classes, train_tf, skip_bad_images=skip, mosaic=mosaic)
            val: BoxDataset = VocDetection(sources("val"), d.classes, val_tf, skip_bad_images=skip)
        else:
            paths = self.data_paths()
            train = CocoDetection(
                paths["train_images"], paths["train_ann"], train_tf, skip_bad_images=skip, mosaic=mosaic
            )
            val = CocoDetection(paths["val_images"], paths["val_ann"], val_tf, skip_bad_images=skip)
        self.num_skipped_train = train.num_skipped
        self.announce_split("train", train)
        self.announce_split("val", val)
        return train, val

    def describe_data(self, split: str) -> str:
        d = self.recipe.data
        if d.type == "voc":
            return ", ".join(f"{t.root} ({t.split})" for t in d.splits(split))
        return super().describe_data(split)

    def bind_val_dataset(self, dataset: Any) -> None:
        """Score against this dataset's own ground truth: its COCO file, or (any other dataset) its targets."""
        super().bind_val_dataset(dataset)
        self.own_val = not isinstance(dataset, BoxDataset)
        if not self.own_val:
            self._val_gt, self.val_cat_ids, self.val_classes = (
                dataset.coco,
                list(dataset.cat_ids),
                list(dataset.classes),
            )
        else:
            names = getattr(dataset, "classes", None) or [str(i) for i in range(self.recipe.model.num_classes)]
            self.val_classes, self.val_cat_ids = list(names), list(range(len(names)))

    # ----------------------------------------------------------------- training

    def _model_targets(self, targets: list[dict]) -> list[dict[str, torch.Tensor]]:
        return [{"boxes": t["boxes"], "labels": t["labels"] + self.label_offset} for t in targets]

    @staticmethod
    def _named_losses(losses: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        named = {LOSS_NAMES.get(k, k): v for k, v in losses.items()}
        return {"loss": sum(named.values()), **named}

    def train_loss(self, model: nn.Module, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        images, targets = batch
        kept = [(image, t) for image, t in zip(images, targets) if image is not None]
        if not kept:
            self.num_unreadable_train += len(images)
            # Every image of the batch was unreadable (skip_bad_images): a zero step keeps DDP in step.
            loss = sum(p.sum() for p in model.parameters()) * 0.0
            return loss, {"loss": loss.detach()}
        self.num_unreadable_train += len(images) - len(kept)
        images, targets = map(list, zip(*kept))
        for t in targets:
            check_target(t, self.recipe.model.num_classes)
        named = self._named_losses(model(images, self._model_targets(targets)))
        return named["loss"], {k: v.detach() for k, v in named.items()}

    # ----------------------------------------------------------------- evaluation

    def reset_metrics(self) -> None:
        self._records: list[dict] = []

    def _results(self, image_id: int, detections: dict[str, torch.Tensor], cat_ids: list[int]) -> list[dict]:
        """One image's detections in COCO results format (xywh, the file's category ids)."""
        boxes = detections["boxes"].float().cpu()
        boxes[:, 2:] -= boxes[:, :2]
        labels = (detections["labels"].cpu() - self.label_offset).tolist()
        return [
            {"image_id": image_id, "category_id": cat_ids[label], "bbox": box, "score": score}
            for box, label, score in zip(boxes.tolist(), labels, detections["scores"].float().cpu().tolist())
        ]

    def val_step(self, model: nn.Module, batch, accelerator) -> list[dict[str, Any]]:
        """Losses and detections per image, gathered so every val image counts exactly once;
        returns this process's per-image records (image_id, losses, COCO-style results)."""
        images, targets = batch
        model = accelerator.unwrap_model(model)
        kept = [i for i, image in enumerate(images) if image is not None]
        for i in kept:
            check_target(targets[i], self.recipe.model.num_classes)
        # A dataset of the user's may leave image_id out: images are then numbered in val order (compute_metrics).
        per_image: list[dict[str, Any]] = [
            {"image_id": t.get("image_id") if isinstance(t, dict) else None, "skipped": True} for t in targets
        ]
        if kept:
            kept_images = [images[i] for i in kept]
            with loss_mode(model, accelerator.device):
                losses = self._named_losses(model(kept_images, self._model_targets([targets[i] for i in kept])))
            losses = {k: float(v) for k, v in losses.items()}
            cat_ids = self.val_cat_ids if self.val_cat_ids is not None else sorted(self.val_gt().getCatIds())
            for i, detections in zip(kept, model(kept_images)):
                image_id = per_image[i]["image_id"]
                per_image[i] = {
                    "image_id": image_id,
                    "losses": losses,
                    "results": self._results(image_id, detections, cat_ids),
                }
                if self.own_val:
                    per_image[i]["truth"] = {
                        "boxes": targets[i]["boxes"].tolist(),
                        "labels": targets[i]["labels"].tolist(),
                    }
        self._records.extend(accelerator.gather_for_metrics(per_image, use_gather_object=True))
        return per_image

    def val_gt(self) -> COCO:
        """The val annotation file's pycocotools index (the ground truth of COCOeval)."""
        if self._val_gt is None:
            self._val_gt = load_coco(self.data_paths()["val_ann"])
        return self._val_gt

    def compute_metrics(self) -> dict[str, float]:
        records, self._records = self._records, []
        if self.own_val:
            if any(r["image_id"] is None for r in records) or len({r["image_id"] for r in records}) < len(records):
                for number, r in enumerate(records, start=1):
                    r["image_id"] = number
                    for det in r.get("results", []):
                        det["image_id"] = number
            self._val_gt = coco_from_targets(
                [{"image_id": r["image_id"], **r["truth"]} for r in records if "truth" in r], self.val_classes
            )
        evaluated = [r for r in records if not r.get("skipped")]
        if len(evaluated) < len(records):
            logger.warning("val: %d unreadable images left out of the metrics", len(records) - len(evaluated))
        n = len(evaluated)
        out: dict[str, float] = {}
        for key in evaluated[0]["losses"] if evaluated else ("loss",):
            out[key] = sum(r["losses"][key] for r in evaluated) / max(n, 1)
        out["num_samples"] = n
        self.predictions = [det for r in evaluated for det in r["results"]]
        payload: list[Any] = [None]
        if PartialState().is_main_process:
            image_ids = [r["image_id"] for r in evaluated]
            if self.voc_ap:
                metrics, summary = self._voc_ap(image_ids)
                logger.info("VOC AP evaluation of %d images, %d detections:\n%s", n, len(self.predictions), summary)
            else:
                backend = coco_backend(self.recipe.evaluation.backend)
                metrics, summary = coco_bbox_metrics(self.val_gt(), self.predictions, image_ids, backend)
                logger.info(
                    "COCO bbox evaluation (%s) of %d images, %d detections:\n%s",
                    backend,
                    n,
                    len(self.predictions),
                    summary,
                )
            payload = [metrics]
        broadcast_object_list(payload)
        out.update(payload[0])
        if self.recipe.data.skip_bad_images:
            out.update(self.skip_counts(len(records) - n))
        return out

    def _voc_ap(self, image_ids: list[int]) -> tuple[dict[str, float], str]:
        from ..data.voc import default_eval_mode, voc_ap_metrics

        e, d = self.recipe.evaluation, self.recipe.data
        roots = [t.root for t in d.splits("val")] if d.type == "voc" else []
        mode = e.eval_mode or default_eval_mode(roots)
        gt = self.val_gt()
        cat_ids = self.val_cat_ids if self.val_cat_ids is not None else sorted(gt.getCatIds())
        classes = self.val_classes or [gt.cats[c]["name"] for c in cat_ids]
        return voc_ap_metrics(gt, self.predictions, image_ids, classes, cat_ids, e.iou_thr, mode)

    def write_predictions(self, path: str | Path) -> None:
        """The last evaluation's detections as a COCO results JSON (what COCO.loadRes reads)."""
        write_text(path, json.dumps(self.predictions))

    # ----------------------------------------------------------------- predict, export, visualize

    def val_transform(self) -> Callable:
        """To a float tensor only: the detector resizes and normalises, so boxes come back in the image's pixels."""
        return detection_transforms(train=False)

    def input_size(self) -> int:
        return self.recipe.model.min_size

    def predict_batch(
        self, model: nn.Module, inputs: Sequence[torch.Tensor], device: torch.device
    ) -> list[dict[str, torch.Tensor]]:
        return model([x.to(device) for x in inputs])

    def prediction_records(
        self,
        outputs: list[dict[str, torch.Tensor]],
        files: Sequence[str | None],
        sizes: Sequence[tuple[int, int]],
        names: list[str],
        category_ids: list[int],
        *,
        topk: int,
        score_thresh: float | None,
    ) -> list[dict[str, Any]]:
        records = []
        for out, file, size in zip(outputs, files, sizes):
            keep = out["scores"] >= score_thresh if score_thresh is not None else slice(None)
            labels = (out["labels"][keep] - self.label_offset).tolist()
            records.append(
                {
                    "file": file,
                    "width": size[0],
                    "height": size[1],
                    "boxes": [
                        [round(v, PIXEL_DECIMALS) for v in box] for box in out["boxes"][keep].float().cpu().tolist()
                    ],
                    "labels": [names[i] for i in labels],
                    "category_ids": [category_ids[i] for i in labels],
                    "scores": [round(v, SCORE_DECIMALS) for v in out["scores"][keep].float().cpu().tolist()],
                }
            )
        return records

    def backbone_weights(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The trunk without the FPN and the head."""
        prefix = self.head.trunk_prefix
        return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}

    def onnx_graph(self, model: nn.Module) -> OnnxGraph:
        """Input `image`, one 3 x H x W image in [0, 1]; outputs `boxes`, `scores`, `labels`."""
        size = self.recipe.model.min_size
        return OnnxGraph(
            module=SingleImageDetector(model).eval(),
            example=(torch.rand(3, size, size),),
            names=dict(input_names=["image"], output_names=["boxes", "scores", "labels"]),
            input="image: float32 3 x H x W, RGB in [0, 1], one image (resized and normalised inside)",
            output="boxes: float32 K x 4 (x1, y1, x2, y2, input pixels); scores: K; labels: K (int64)",
            subject=f'model.head = "{self.recipe.model.head}"',
        )

    def onnx_difference(
        self, module: nn.Module, session: Any, inputs: list[torch.Tensor], path: Path, bar: Any
    ) -> tuple[float, float, str]:
        """Boxes image by image, matched by score order."""
        diff = 0.0
        for image in inputs:
            boxes, scores, _ = session.run(None, {"image": image.numpy()})
            want_boxes, want_scores, _ = module(image)
            if len(boxes) != len(want_boxes):
                raise RecipeError(
                    f"{path}: --check failed: onnxruntime found {len(boxes)} boxes, PyTorch {len(want_boxes)}"
                )
            got = torch.from_numpy(boxes)[torch.from_numpy(scores).argsort(descending=True)]
            want = want_boxes[want_scores.argsort(descending=True)]
            diff = max(diff, (got - want).abs().max().item() if len(got) else 0.0)
            bar.update(1)
        return diff, BOX_TOLERANCE, "box px"

    def check_visualize(self) -> None:
        """Detections are what `visualize` draws."""

    def draw_prediction(
        self, model: nn.Module, image: torch.Tensor, truth: Any, classes: list[str], score_thresh: float
    ) -> torch.Tensor:
        with torch.no_grad():
            (detections,) = model([image])
        detections = {**detections, "labels": detections["labels"] - self.label_offset}
        return draw_boxes(image, truth, detections, classes, score_thresh)

    def draw_sample(self, image: torch.Tensor, target: Any, classes: list[str]) -> torch.Tensor:
        empty = {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64)}
        return draw_boxes(image, target, empty, classes, 1.0)
