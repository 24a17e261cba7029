"""Mosaic and mmdet multi-scale resize: geometry, per-sample seeding, and bit-exact mid-epoch resume."""

from __future__ import annotations

import os
import subprocess
import sys

import torch
from PIL import Image
from torchvision import tv_tensors

from accel_trainer.data.coco import CocoDetection, RandomRescale, detection_transforms
from accel_trainer.data.mosaic import PAD_VALUE, Mosaic
from accel_trainer.data.sampling import SeededDataset

from .helpers import REPO
from .helpers.datasets import make_coco
from .helpers.recipes import TINY_DET, write_recipe
from .helpers.resume import KILL_HOOK, assert_identical, final_weights


def _sample(w: int, h: int, boxes: list[list[float]], value: int) -> tuple[Image.Image, dict]:
    return Image.new("RGB", (w, h), (value,) * 3), {
        "boxes": tv_tensors.BoundingBoxes(
            torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), format="XYXY", canvas_size=(h, w)
        ),
        "labels": torch.arange(len(boxes)),
        "image_id": value,
    }


def test_mosaic_places_four_images_around_the_centre_and_clips_boxes():
    mosaic = Mosaic(1.0, 20, until_epoch=5)
    others = {
        0: _sample(10, 10, [[0, 0, 10, 10]], 20),
        1: _sample(40, 20, [[0, 0, 4, 20]], 30),
        2: _sample(20, 20, [[19.5, 0, 20, 5]], 40),
    }
    torch.manual_seed(0)  # the centre drawn first: (19, 25) on the 40 x 40 canvas
    draws = iter([0, 1, 2])
    image, target = mosaic(*_sample(20, 20, [[0, 0, 20, 20]], 10), lambda i: others[next(draws)], 3)
    assert image.shape == (3, 40, 40) and image.dtype == torch.uint8 and target["image_id"] == 10
    # Top-left: the sample (20 px fits s = 20), bottom-right corner at the centre, 1 px cut off the canvas.
    # Top-right: the 10 px image scaled x2. Bottom-left: 40 x 20 scaled x0.5; its 4 px box becomes 2 px,
    # half of it off the canvas. Bottom-right: its 0.5 px box is dropped.
    assert target["boxes"].tolist() == [[0, 5, 19, 25], [19, 5, 39, 25], [0, 25, 1, 35]]
    assert target["labels"].tolist() == [0, 0, 0]
    assert image[0, 24, 18] == 10 and image[0, 24, 19] == 20 and image[0, 25, 0] == 30 and image[0, 25, 19] == 40
    assert image[0, 0, 0] == PAD_VALUE and image[0, 39, 39] == PAD_VALUE


def test_mosaic_draws_are_a_function_of_seed_epoch_and_index_and_stop_for_the_last_epochs(tmp_path):
    images, ann_file = make_coco(tmp_path)
    ds = CocoDetection(
        images, ann_file, detection_transforms(train=True, hflip=0.5), mosaic=Mosaic(1.0, 32, until_epoch=1)
    )
    seeded = SeededDataset(ds, seed=3)
    first, again = seeded[(0, 1)], seeded[(0, 1)]
    assert (
        first[0].shape == (3, 64, 64)
        and torch.equal(first[0], again[0])
        and torch.equal(first[1]["boxes"], again[1]["boxes"])
    )
    assert seeded[(1, 1)][0].shape == (3, 30, 40)  # epoch 1 >= until_epoch: plain images


def test_multiscale_range_and_value_follow_mmdet():
    image = tv_tensors.Image(torch.zeros(3, 100, 200))
    value = RandomRescale(0, 0, scales=[[1333, 640], [1333, 800]], mode="value")
    sizes = {tuple(value(image).shape[-2:]) for _ in range(30)}
    # Fit both edges: short 100 -> 640 (x6.4); short 100 -> 800 would make the long side 1600 > 1333: x6.665.
    assert sizes == {(640, 1280), (666, 1333)}
    ranged = RandomRescale(0, 0, scales=[[300, 50], [300, 80]], mode="range")
    heights = {ranged(image).shape[-2] for _ in range(60)}
    assert heights <= set(range(50, 81)) and len(heights) > 5


RESUME_SETS = [
    "checkpoint_config.interval=3",
    "checkpoint_config.by_epoch=false",
    "data.batch_size=2",
    "data.shapes.num_train=8",
    "runner.max_epochs=2",
    "data.augment.mosaic=0.7",
    "data.augment.mosaic_epochs=1",
    "data.augment.scales=[[40, 24], [48, 40]]",
    'workflow=[["train", 1]]',
]


def _run(tmp_path, name: str, sets: list[str], *extra: str) -> subprocess.CompletedProcess:
    recipe = write_recipe(tmp_path, TINY_DET, name=f"{name}.toml", work_dir=str(tmp_path / name))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=f"{tmp_path}{os.pathsep}{REPO}")
    args = [a for s in sets for a in ("--set", s)]
    return subprocess.run(
        [sys.executable, "-m", "accel_trainer", str(recipe), *args, *extra],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=600,
    )


def test_mosaic_and_multiscale_runs_resume_bit_exactly_mid_epoch(tmp_path):
    straight = _run(tmp_path, "straight", RESUME_SETS)
    assert straight.returncode == 0, straight.stderr[-3000:]
    (tmp_path / "kill_hook.py").write_text(KILL_HOOK)
    # 4 iterations per epoch: killed at 4, resumed from iter_3 in the middle of the mosaic epoch.
    killed = _run(
        tmp_path, "killed", [*RESUME_SETS, 'custom_hooks=[{type = "kill_hook:KillAt", iter = 4}]', "data.num_workers=1"]
    )
    assert killed.returncode != 0
    resumed = _run(tmp_path, "killed", [*RESUME_SETS, "data.num_workers=1"], "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_identical(final_weights(tmp_path / "killed", "iter_8"), final_weights(tmp_path / "straight", "iter_8"))


def test_visualize_train_draws_what_the_network_is_fed(tmp_path):
    from accel_trainer.cli import main

    recipe = write_recipe(tmp_path, TINY_DET)
    out = tmp_path / "drawn"
    assert (
        main(["visualize", str(recipe), "--train", "--out", str(out), "--num", "2", "--set", "data.augment.mosaic=1.0"])
        == 0
    )
    drawn = sorted(out.glob("train_*.png"))
    assert len(drawn) == 2 and Image.open(drawn[0]).size == (64, 64)  # a 2 x min_size mosaic canvas
    assert main(["visualize", str(recipe), "--out", str(out)]) == 2
