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


def replace_verified(folder: Path, name: str, data: bytes) -> None:
    """Replace `folder / name` with `data` and rewrite its digest in the manifest, so it still verifies."""
    (folder / name).write_bytes(data)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["sha256"][name] = hashlib.sha256(data).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(manifest))
