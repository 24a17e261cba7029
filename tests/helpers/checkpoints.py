"""A tiny model whose state holds every kind of tensor, a file damaged by one bit, and a file
replaced with its digest rewritten (as whoever writes a checkpoint can), for the checkpoint and
weights-file tests."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch


def tiny_model() -> torch.nn.Module:
    """Seeded linear layers with a BatchNorm, plus a bool and a float16 buffer."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 3))
    model.register_buffer("flag", torch.tensor(True))
    model.register_buffer("fp16", torch.arange(3, dtype=torch.float16))
    return model


def flip_last_byte(path: Path) -> None:
    """Damage `path` by one bit, as a disk that lies would."""
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))


def tiny_classifier() -> torch.nn.Module:
    """A seeded 4-class image classifier that is not a timm model: a model of the user's own."""
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, stride=2),
        torch.nn.BatchNorm2d(8),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(8, 4),
    )


def custom_model_checkpoint(tmp_path: Path) -> Path:
    """The checkpoint of one epoch of the tiny recipe trained on `tiny_classifier` (Python API)."""
    from accel_trainer import Trainer, load_recipe

    from .recipes import write_recipe

    recipe = load_recipe(write_recipe(tmp_path), {"runner.max_epochs": 1, "workflow": [["train", 1]]})
    trainer = Trainer(recipe, model=tiny_classifier())
    trainer.fit()
    return trainer.checkpoints.root / "epoch_1"


def replace_verified(folder: Path, name: str, data: bytes) -> None:
    """Replace `folder / name` with `data` and rewrite its digest in the manifest, so it still verifies."""
    (folder / name).write_bytes(data)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["sha256"][name] = hashlib.sha256(data).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(manifest))


def newest_verified(root: Path) -> Path | None:
    """The newest checkpoint folder (in the order `--resume auto` tries them) whose digests verify:
    what a crash during a save must leave behind."""
    from accel_trainer.checkpoint.format import CheckpointError, candidates, verify_checkpoint

    for path in candidates(root):
        try:
            verify_checkpoint(path)
        except CheckpointError:
            continue
        return path
    return None
