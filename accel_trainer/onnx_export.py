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
from torch import nn

from .errors import RecipeError
from .files import atomic_write
from .predict import Predictor
from .progress import progress_bar, progress_enabled


def _require_onnx():
    try:
        import onnx
        import onnxruntime
    except ImportError as exc:
        raise RecipeError(
            f"ONNX export needs the onnx extra ({exc.name} is not installed): pip install 'accel_trainer[onnx]'"
        ) from None
    return onnx, onnxruntime


def _exporter_reason(exc: Exception) -> str:
    """The exporter's own one-line cause (its message starts with generic advice)."""
    text = str(exc)
    summary = text.split("## Exception summary", 1)[-1].strip().splitlines()
    line = next((s for s in summary if s.strip()), type(exc).__name__)
    return " ".join(line.split())[:300]


def _check_inputs(predictor: Predictor, count: int = 4) -> tuple[list[torch.Tensor], str]:
    """A few preprocessed val images when the recipe's val data is on this machine, else random inputs."""
    from torchvision.datasets.folder import IMG_EXTENSIONS

    try:
        val: Any = predictor.task.build_datasets()[1]  # ImageFolder (root) or a detection set (image_dir)
        root = Path(getattr(val, "root", None) or val.image_dir)
        files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMG_EXTENSIONS)[:count]
    except RecipeError:
        files = []
    if files:
        return [predictor.preprocess(f)[0] for f in files], f"{len(files)} val images"
    generator = torch.Generator().manual_seed(0)
    size = predictor.task.input_size()
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
    graph_spec = predictor.task.onnx_graph(predictor.model)
    metadata["input"], metadata["output"] = graph_spec.input, graph_spec.output
    with atomic_write(out_path) as tmp:
        try:
            # The exporter prints its graphs and progress; the outcome is reported here in one line.
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                torch.onnx.export(
                    graph_spec.module, graph_spec.example, str(tmp), dynamo=True, verbose=False, **graph_spec.names
                )
        except Exception as exc:  # the exporter raises many types; any failure means no graph for this model
            raise RecipeError(
                f"cannot export {graph_spec.subject} to ONNX: torch.onnx's exporter cannot express it "
                f"({_exporter_reason(exc)}); no file written. Export .safetensors instead and run it with PyTorch"
            ) from None
        graph = onnx.load(str(tmp))
        for key, value in metadata.items():
            graph.metadata_props.add(key=key, value=value)
        onnx.save(graph, str(tmp))
    print(f"wrote {out_path} ({recipe.model.task}, {len(predictor.names)} classes)")
    if check:
        _check(graph_spec.module, out_path, predictor, ort, progress_enabled(progress))
    return 0


def _check(module: nn.Module, path: Path, predictor: Predictor, ort, progress: bool) -> None:
    """onnxruntime against PyTorch on the same inputs, within the task's tolerance (classification:
    logits within 1e-4, one batch; detection: boxes within 1e-3 px, image by image)."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs, what = _check_inputs(predictor)
    with torch.no_grad(), progress_bar(len(inputs), "check", "img", progress) as bar:
        diff, tolerance, unit = predictor.task.onnx_difference(module, session, inputs, path, bar)
    print(f"check: onnxruntime vs PyTorch on {what}: max abs diff {diff:.2e} ({unit}; tolerance {tolerance:g})")
    if diff > tolerance:
        raise RecipeError(
            f"{path}: --check failed: max abs diff {diff:.2e} > {tolerance:g}; the file is kept for inspection"
        )
