"""`accel-trainer export CKPT --out FILE.safetensors`: weights for inference or for plain timm
(`--out FILE.onnx`: see `onnx_export.py`).

`--backbone-only` writes what `timm.create_model(name, pretrained=True,
pretrained_cfg_overlay=dict(file=FILE), num_classes=0)` loads: the timm model's own keys,
without the classifier (classification) or the detection neck and heads.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import timm
import torch
from safetensors.torch import save_file

from ..checkpoint.format import load_checkpoint
from ..errors import RecipeError
from ..recipe import tomllib

DETECTION_BACKBONE_PREFIX = "backbone.body."


def backbone_state(state: dict[str, torch.Tensor], model_cfg: dict) -> dict[str, torch.Tensor]:
    """The timm backbone's weights under timm's own key names."""
    if model_cfg.get("task", "classification") == "detection":
        prefix = DETECTION_BACKBONE_PREFIX
        return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    name = model_cfg.get("backbone", "")
    head = timm.models.get_pretrained_cfg_value(name, "classifier") or "fc"
    heads = head if isinstance(head, (list, tuple)) else [head]
    return {k: v for k, v in state.items() if not any(k == h or k.startswith(h + ".") for h in heads)}


def export_command(
    ckpt: str, out: str, backbone_only: bool, ema: bool, check: bool = False, progress: bool | None = None
) -> int:
    """The format follows the suffix of `out`: `.safetensors` (weights) or `.onnx` (a graph, see onnx_export)."""
    if not out.endswith((".safetensors", ".onnx")):
        raise RecipeError(f"--out {out}: expected a .safetensors or .onnx file")
    if check and not out.endswith(".onnx"):
        raise RecipeError("--check compares an ONNX file with PyTorch; use it with --out FILE.onnx")
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
        state = backbone_state(state, model_cfg)
    out_path = Path(out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.tmp-{os.getpid()}")
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
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp), metadata=metadata)
    os.replace(tmp, out_path)
    print(f"wrote {len(state)} tensors to {out_path}")
    return 0
