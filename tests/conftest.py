"""Shared fixtures: tiny recipes on the built-in shapes data, cached once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def shapes_cache(tmp_path_factory) -> Path:
    """Generate the synthetic data once into a session folder shared by subprocesses."""
    cache = tmp_path_factory.mktemp("shapes_cache")
    os.environ["ACCEL_TRAINER_CACHE"] = str(cache)
    return cache


TINY_CLS = """
_base_ = ["{runtime}"]
work_dir = "{work_dir}"
workflow = [["train", 1], ["val", 1]]

[model]
backbone = "resnet10t"
num_classes = 4

[data]
type = "shapes"
img_size = 32
batch_size = 16
num_workers = 0
pin_memory = false

[data.shapes]
num_train = 128
num_val = 21
image_size = 32

[data.augment]
auto_augment = ""
color_jitter = 0.0
scale = [0.8, 1.0]
label_smoothing = 0.0

[optimizer]
type = "AdamW"
lr = 0.001
weight_decay = 0.01

[runner]
type = "EpochBasedRunner"
max_epochs = 2

[log_config]
interval = 4

[accelerate]
seed = 0
"""


def write_recipe(tmp_path: Path, text: str = TINY_CLS, name: str = "tiny.toml", **fmt) -> Path:
    values = {"runtime": str(REPO / "recipes/_base_/default_runtime.toml"), "work_dir": str(tmp_path / "work")}
    values.update(fmt)
    path = tmp_path / name
    path.write_text(text.format(**values))
    return path


@pytest.fixture
def tiny_recipe(tmp_path) -> Path:
    return write_recipe(tmp_path)
