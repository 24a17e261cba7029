"""`accel-trainer export CKPT --out model.onnx`: a deployable graph with its input contract inside.

Classification: input `images`, float32 N x 3 x H x W RGB in [0, 1] at the recipe's img_size
(dynamic batch), the normalisation inside the graph, output `logits`. The class names and the
input contract are in the model's metadata_props. Detection heads go through the same exporter
(torch.export); when it cannot express a head the export stops naming the head and the reason,
leaving no file. `--check` runs onnxruntime and compares with PyTorch.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import nn

from .errors import RecipeError
from .files import atomic_write
from .predict import Predictor
from .progress import progress_bar, progress_enabled

LOGITS_TOLERANCE = 1e-4
BOX_TOLERANCE = 1e-3


def _require_onnx():
    try:
        import onnx
        import onnxruntime
    except ImportError as exc:
        raise RecipeError(
            f"ONNX export needs the onnx extra ({exc.name} is not installed): pip install 'accel_trainer[onnx]'"
        ) from None
    return onnx, onnxruntime


class Normalized(nn.Module):
    """The classifier with timm's input normalisation in front, so the graph takes [0, 1] RGB."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(IMAGENET_DEFAULT_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_DEFAULT_STD).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model((images - self.mean) / self.std)


class SingleImageDetector(nn.Module):
    """One CHW image in, boxes / scores / labels out, as torchvision's detectors export."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        (out,) = self.model([image])
        return out["boxes"], out["scores"], out["labels"]


def _exporter_reason(exc: Exception) -> str:
    """The exporter's own one-line cause (its message starts with generic advice)."""
    text = str(exc)
    summary = text.split("## Exception summary", 1)[-1].strip().splitlines()
    line = next((s for s in summary if s.strip()), type(exc).__name__)
    return " ".join(line.split())[:300]


def _check_inputs(predictor: Predictor, count: int = 4) -> tuple[list[torch.Tensor], str]:
    """A few preprocessed val images when the recipe's val data is on this machine, else random inputs."""
    from torchvision.datasets.folder import IMG_EXTENSIONS

    from .tasks import build_task

    recipe = predictor.recipe
    try:
        val: Any = build_task(recipe).build_datasets()[1]  # ImageFolder (root) or a detection set (image_dir)
        root = Path(getattr(val, "root", None) or val.image_dir)
        files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMG_EXTENSIONS)[:count]
    except RecipeError:
        files = []
    if files:
        return [predictor.preprocess(f)[0] for f in files], f"{len(files)} val images"
    generator = torch.Generator().manual_seed(0)
    size = recipe.data.img_size if recipe.model.task == "classification" else recipe.model.min_size
    return [torch.rand(3, size, size, generator=generator) for _ in range(count)], f"{count} random inputs"


def export_onnx(
    ckpt: str, out: str, *, ema: bool, check: bool, classes: dict | None, progress: bool | None = None
) -> int:
    """Write `out` (complete or not at all); with `check`, compare onnxruntime with PyTorch and print the figures."""
    onnx, ort = _require_onnx()
    predictor = Predictor.from_checkpoint(ckpt, ema=ema, device="cpu")
    recipe = predictor.recipe
    out_path = Path(out)
    metadata = {
        "classes": json.dumps(classes or {"names": predictor.names, "category_ids": predictor.category_ids}),
        "backbone": recipe.model.backbone,
        "task": recipe.model.task,
        "source": str(ckpt),
        "weights": "ema" if ema else "raw",
    }
    if recipe.model.task == "classification":
        module: nn.Module = Normalized(predictor.model).eval()
        size = recipe.data.img_size
        example = (torch.rand(2, 3, size, size),)
        names: dict[str, Any] = dict(
            input_names=["images"],
            output_names=["logits"],
            dynamic_shapes={"images": {0: torch.export.Dim("batch", min=1)}},
        )
        metadata["input"] = (
            f"images: float32 N x 3 x {size} x {size}, RGB in [0, 1] (normalised inside); preprocess as "
            f"timm's eval transform: resize the shorter side to {int(size / recipe.data.crop_pct)} "
            f"(bicubic), center crop {size}"
        )
        metadata["output"] = "logits: float32 N x num_classes (softmax for probabilities)"
    else:
        module = SingleImageDetector(predictor.model).eval()
        example = (torch.rand(3, recipe.model.min_size, recipe.model.min_size),)
        names = dict(input_names=["image"], output_names=["boxes", "scores", "labels"])
        metadata["input"] = "image: float32 3 x H x W, RGB in [0, 1], one image (resized and normalised inside)"
        metadata["output"] = "boxes: float32 K x 4 (x1, y1, x2, y2, input pixels); scores: K; labels: K (int64)"
    with atomic_write(out_path) as tmp:
        try:
            # The exporter prints its graphs and progress; the outcome is reported here in one line.
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                torch.onnx.export(module, example, str(tmp), dynamo=True, verbose=False, **names)
        except Exception as exc:  # the exporter raises many types; any failure means no graph for this head
            what = (
                f'model.head = "{recipe.model.head}"'
                if recipe.model.task == "detection"
                else f"model.backbone = {recipe.model.backbone!r}"
            )
            raise RecipeError(
                f"cannot export {what} to ONNX: torch.onnx's exporter cannot express it ({_exporter_reason(exc)}); "
                f"no file written. Export .safetensors instead and run it with PyTorch"
            ) from None
        graph = onnx.load(str(tmp))
        for key, value in metadata.items():
            graph.metadata_props.add(key=key, value=value)
        onnx.save(graph, str(tmp))
    print(f"wrote {out_path} ({recipe.model.task}, {len(predictor.names)} classes)")
    if check:
        _check(module, out_path, predictor, ort, recipe.model.task, progress_enabled(progress))
    return 0


def _check(module: nn.Module, path: Path, predictor: Predictor, ort, task: str, progress: bool) -> None:
    """onnxruntime against PyTorch on the same inputs: logits within 1e-4 (one batch, the dynamic
    batch axis included), boxes within 1e-3 px (image by image)."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs, what = _check_inputs(predictor)
    with torch.no_grad(), progress_bar(len(inputs), "check", "img", progress) as bar:
        if task == "classification":
            batch = torch.stack(inputs)
            diff = (
                (torch.from_numpy(session.run(None, {"images": batch.numpy()})[0]) - module(batch)).abs().max().item()
            )
            tolerance, unit = LOGITS_TOLERANCE, "logits"
            bar.update(len(inputs))
        else:
            diff, tolerance, unit = 0.0, BOX_TOLERANCE, "box px"
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
    print(f"check: onnxruntime vs PyTorch on {what}: max abs diff {diff:.2e} ({unit}; tolerance {tolerance:g})")
    if diff > tolerance:
        raise RecipeError(
            f"{path}: --check failed: max abs diff {diff:.2e} > {tolerance:g}; the file is kept for inspection"
        )
