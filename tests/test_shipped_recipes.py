"""Every shipped recipe validates, and the real-data ones train end to end on tiny stand-in data.

The ImageNet and COCO recipes point at folders this machine does not have; here their paths
are replaced by small built-in shapes sets (an ImageFolder tree, COCO JSON + JPEGs) and their
sizes shrunk, so the rest of each recipe (model, augmentation, optimizer groups, schedules,
EMA, freezing, hooks) runs as shipped.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from accel_trainer import Trainer, load_recipe
from accel_trainer.data.shapes import ShapesSpec, ensure_shapes_classification, ensure_shapes_detection

from .helpers import REPO
from .helpers.records import read_records

SHIPPED = sorted(p for p in (REPO / "recipes").rglob("*.toml") if "_base_" not in p.parts)


def test_the_recipe_folder_holds_what_the_readme_names():
    names = {str(p.relative_to(REPO / "recipes")) for p in SHIPPED}
    assert {
        "cls.toml",
        "det.toml",
        "imagenet/resnest50d.toml",
        "coco/fcos_resnest50d_fpn_1x.toml",
        "coco/faster_rcnn_resnest50d_freeze.toml",
    } <= names


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(REPO / "recipes")))
def test_every_shipped_recipe_validates(path):
    recipe = load_recipe(path, check_files=False)
    assert recipe.runner.max_epochs or recipe.runner.max_iters


def _small(tmp_path: Path, **extra) -> dict:
    return {
        "work_dir": str(tmp_path / "work"),
        "data.num_workers": 0,
        "data.pin_memory": False,
        "data.persistent_workers": False,
        "log_config.interval": 1,
        **extra,
    }


def test_imagenet_recipe_trains_on_a_small_image_folder(tmp_path):
    train_root, val_root = ensure_shapes_classification(ShapesSpec(num_train=12, num_val=6, image_size=32))
    overrides = _small(
        tmp_path,
        **{
            "data.train.root": str(train_root),
            "data.val.root": str(val_root),
            "model.num_classes": 4,
            "data.img_size": 32,
            "data.batch_size": 4,
            "runner.max_epochs": 1,
            "log_config.hooks": [{"type": "TextLoggerHook"}],
        },
    )
    trainer = Trainer(load_recipe(REPO / "recipes/imagenet/resnest50d.toml", overrides))
    assert trainer.channels_last and trainer.task.mixup is not None
    trainer.fit()
    (val,) = [r for r in read_records(trainer.work_dir) if r["mode"] == "val"]
    assert val["num_samples"] == 6 and {"top1", "raw_top1"} <= set(val)  # EMA and raw weights
    assert trainer.iter == 3
    assert (Path(trainer.work_dir) / "checkpoints" / "epoch_1" / "ema.safetensors").is_file()


@pytest.fixture(scope="module")
def tiny_coco() -> dict[str, Path]:
    return ensure_shapes_detection(ShapesSpec(num_train=4, num_val=2, image_size=64, max_objects=2))


def _coco_overrides(tmp_path: Path, paths: dict[str, Path], **extra) -> dict:
    return _small(
        tmp_path,
        **{
            "data.train.root": str(paths["train_images"]),
            "data.train.ann_file": str(paths["train_ann"]),
            "data.val.root": str(paths["val_images"]),
            "data.val.ann_file": str(paths["val_ann"]),
            "model.num_classes": 4,
            "model.min_size": 64,
            "model.max_size": 64,
            "model.pretrained": False,  # the recipes' hub weights are tested with a planted cache in test_pretrained.py
            **extra,
        },
    )


def test_coco_fcos_recipe_trains_and_scores(tmp_path, tiny_coco):
    overrides = _coco_overrides(tmp_path, tiny_coco, **{"runner.max_epochs": 1})
    trainer = Trainer(load_recipe(REPO / "recipes/coco/fcos_resnest50d_fpn_1x.toml", overrides))
    trainer.fit()
    (val,) = [r for r in read_records(trainer.work_dir) if r["mode"] == "val"]
    assert val["num_samples"] == 2 and "bbox_mAP" in val and trainer.iter == 2


def test_coco_freeze_recipe_switches_stage_and_batch_size(tmp_path, tiny_coco):
    overrides = _coco_overrides(
        tmp_path,
        tiny_coco,
        **{
            "runner.max_epochs": 2,
            "freeze.epochs": 1,
            "freeze.batch_size": 4,
            "data.batch_size": 2,
            "workflow": [["train", 1]],
        },
    )
    trainer = Trainer(load_recipe(REPO / "recipes/coco/faster_rcnn_resnest50d_freeze.toml", overrides))
    trainer.fit()
    train = [r for r in read_records(trainer.work_dir) if r["mode"] == "train"]
    assert [r["epoch"] for r in train] == [1, 2, 2]  # 1 step of 4 images frozen, then 2 steps of 2
    assert trainer.iter == 3
