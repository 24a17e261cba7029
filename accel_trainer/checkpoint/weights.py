"""Weights from anywhere: our checkpoints, safetensors files, and torch `.pth` files read safely.

Pickle-based files go only through torch's weights-only unpickler, so loading them never runs
code; what they hold is fitted to a model with every mismatch reported.
"""

from __future__ import annotations

import argparse
import logging
import pickle
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import RecipeError
from .format import MANIFEST, MODEL, read_tensors, verify_checkpoint

logger = logging.getLogger(__name__)

TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".pth.tar")


def _unwrap(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """Find the state dict inside common containers ({'state_dict': ...}, {'model': ...}, DDP's 'module.')."""
    while isinstance(obj, dict) and any(isinstance(obj.get(k), dict) for k in ("state_dict", "model")):
        obj = next(obj[k] for k in ("state_dict", "model") if isinstance(obj.get(k), dict))
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)} if isinstance(obj, dict) else {}
    if not tensors:
        raise RecipeError(f"{path}: holds no tensors to load as weights")
    if all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module.") :]: v for k, v in tensors.items()}
    return tensors


def _data_globals() -> list:
    """Constructors of plain data that real checkpoints carry next to their tensors.

    mmcv/mmdet keep numpy values in `meta`; timm's training checkpoints (`*.pth.tar`) keep the
    training `args` as an argparse.Namespace. These only build data, and whatever they contain is
    unpickled by the same restricted unpickler, so allowing them still runs no code.
    """
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray  # type: ignore[no-redef]
    dtypes = [getattr(np.dtypes, n) for n in dir(np.dtypes) if n.endswith("DType")]
    return [multiarray.scalar, multiarray._reconstruct, np.ndarray, np.dtype, *dtypes, argparse.Namespace]


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """Model weights from a safetensors file, a torch weights file or one of our checkpoint folders."""
    path = Path(path)
    if path.is_dir():
        if not (path / MODEL).is_file():
            raise RecipeError(f"{path}: a folder without {MODEL} is not a checkpoint")
        if (path / MANIFEST).exists():
            verify_checkpoint(path, [MODEL])
        return read_tensors(path / MODEL)
    if not path.is_file():
        raise RecipeError(f"{path}: no such file")
    if path.suffix == ".safetensors":
        return _unwrap(read_tensors(path), path)
    if not path.name.endswith(TORCH_SUFFIXES):
        raise RecipeError(
            f"{path}: unsupported weights file; expected .safetensors, {', '.join(TORCH_SUFFIXES)} "
            "or a checkpoint folder"
        )
    try:
        with torch.serialization.safe_globals(_data_globals()):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise RecipeError(
            f"{path}: not a plain weights file; it needs arbitrary code to unpickle, so it was refused "
            f"(no code was run). Convert it to .safetensors where it came from. ({str(e).splitlines()[0]})"
        ) from None
    except (RuntimeError, OSError, EOFError, ValueError) as e:
        raise RecipeError(f"{path}: cannot read as torch weights ({e})") from None
    return _unwrap(obj, path)


def match_report(own: dict[str, torch.Tensor], tensors: dict[str, torch.Tensor]) -> dict[str, list[str]]:
    """Keys of the model the weights lack, keys the model lacks, and keys whose shapes differ."""
    return {
        "missing": [k for k in own if k not in tensors],
        "unexpected": [k for k in tensors if k not in own],
        "shape mismatch": [
            f"{k} {tuple(v.shape)} vs model {tuple(own[k].shape)}"
            for k, v in tensors.items()
            if k in own and v.shape != own[k].shape
        ],
    }


def describe_mismatch(report: dict[str, list[str]], shown: int = 5) -> str:
    """`match_report`'s problems in one line: each kind's count and its first `shown` keys."""
    return "; ".join(
        f"{len(keys)} {kind}: {', '.join(keys[:shown])}{' ...' if len(keys) > shown else ''}"
        for kind, keys in report.items()
        if keys
    )


def load_exactly(model: torch.nn.Module, tensors: dict[str, torch.Tensor], *, source: str | Path, hint: str) -> None:
    """Load every tensor into `model`, or fail naming `source`, the keys that do not fit and `hint`
    (how to load it instead), rather than with torch's multi-line RuntimeError."""
    problems = describe_mismatch(match_report(model.state_dict(), tensors))
    if problems:
        raise RecipeError(f"{source}: the weights do not fit the model ({problems}); {hint}")
    model.load_state_dict(tensors)


def fit_weights(
    model: torch.nn.Module,
    tensors: dict[str, torch.Tensor],
    *,
    source: str | Path,
    revise_keys: Iterable[tuple[str, str]] = (),
    strict: bool = False,
) -> dict[str, list[str]]:
    """Load `tensors` into `model` after renaming keys by `revise_keys` (regex, replacement) pairs.

    Missing, unexpected and shape-mismatched keys are reported; `strict` turns any of them into an
    error naming `source` instead of loading the rest.
    """
    for pattern, replacement in revise_keys:
        tensors = {re.sub(pattern, replacement, k): v for k, v in tensors.items()}
    own = model.state_dict()
    report = match_report(own, tensors)
    problems = {kind: keys for kind, keys in report.items() if keys}
    lines = describe_mismatch(report)
    if problems and strict:
        raise RecipeError(f"{source}: weights do not fit the model (load_options.strict = true): {lines}")
    if problems:
        logger.warning("loading %s: %s", source, lines)
    fitting = {k: v for k, v in tensors.items() if k in own and v.shape == own[k].shape}
    model.load_state_dict(fitting, strict=False)
    return report
