"""`accel-trainer export CKPT --out FILE.safetensors`: weights for inference or for plain timm
(`--out FILE.onnx`: see `onnx_export.py`).

`--backbone-only` writes what `timm.create_model(name, pretrained=True,
pretrained_cfg_overlay=dict(file=FILE), num_classes=0)` loads: the timm model's own keys,
without the classifier (classification) or the detection neck and heads.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import RecipeError
from ..files import atomic_write, check_output_file
from ..recipe.reading import tomllib
from .arguments import add_progress_arg

DESCRIPTION = "Write a checkpoint's weights as one safetensors file, or the model as ONNX."


def export_command(
    ckpt: str, out: str, backbone_only: bool, ema: bool, check: bool = False, progress: bool | None = None
) -> int:
    """The format follows the suffix of `out`: `.safetensors` (weights) or `.onnx` (a graph, see onnx_export)."""
    from safetensors.torch import save_file

    from ..checkpoint.format import load_checkpoint
    from ..checkpoint.weights import load_exactly
    from ..predict import checkpoint_recipe
    from ..tasks import build_task

    if not out.endswith((".safetensors", ".onnx")):
        raise RecipeError(f"--out {out}: expected a .safetensors or .onnx file")
    if check and not out.endswith(".onnx"):
        raise RecipeError("--check compares an ONNX file with PyTorch; use it with --out FILE.onnx")
    check_output_file(out, "--out")  # before the work, not after it
    loaded = load_checkpoint(Path(ckpt))
    classes = loaded.trainer_state.get("classes")
    if out.endswith(".onnx"):
        if backbone_only:
            raise RecipeError("--backbone-only writes weights for timm; ONNX export takes the whole model")
        from ..onnx_export import export_onnx

        return export_onnx(ckpt, out, ema=ema, check=check, classes=classes, progress=progress)
    model_cfg = tomllib.loads(loaded.recipe_text).get("model", {})
    if ema:
        if "ema" not in loaded.extra_tensors:
            raise RecipeError(f"{ckpt}: has no EMA weights (ema.safetensors); train with [ema] enable = true")
        state = loaded.extra_tensors["ema"]
    else:
        state = loaded.model_state
    if backbone_only:
        task = build_task(checkpoint_recipe(ckpt))
        # The trunk is cut by the recipe model's key names: a model of the user's own has others.
        load_exactly(
            task.build_model(),
            state,
            source=ckpt,
            hint="--backbone-only takes the timm backbone out of the model recipe.toml builds; "
            "export the whole state dict instead (without --backbone-only)",
        )
        state = task.backbone_weights(state)
    out_path = Path(out)
    metadata = {
        "format": "pt",
        "backbone": str(model_cfg.get("backbone", "")),
        "source": str(ckpt),
        "part": "backbone" if backbone_only else "model",
        "weights": "ema" if ema else "raw",
        "model": json.dumps(model_cfg),
    }
    if classes:
        metadata["classes"] = json.dumps(classes)
    with atomic_write(out_path) as tmp:
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp), metadata=metadata)
    print(f"wrote {len(state)} tensors to {out_path}")
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="checkpoint folder, e.g. work_dirs/cls/checkpoints/epoch_8")
    parser.add_argument("--out", required=True, help="output .safetensors or .onnx file (the suffix picks the format)")
    parser.add_argument(
        "--check", action="store_true", help="ONNX: run onnxruntime on a few val images and compare with PyTorch"
    )
    parser.add_argument(
        "--backbone-only", action="store_true", help="only the timm backbone, loadable by timm.create_model"
    )
    parser.add_argument("--ema", action="store_true", help="export the EMA weights instead of the raw ones")
    add_progress_arg(parser)


def run(args: argparse.Namespace) -> int:
    return export_command(args.checkpoint, args.out, args.backbone_only, args.ema, args.check, args.progress)
