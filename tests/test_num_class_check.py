"""The class-count check is the trainer's own: on without `_base_`, once with mmcv's custom_hooks entry."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from accel_trainer import Trainer, load_recipe
from accel_trainer.cli import main
from accel_trainer.hooks.num_class_check import NumClassCheckHook

from .helpers.datasets import make_coco
from .helpers.recipes import TINY_CLS, TINY_DET, write_recipe


def _image_folder(root: Path, classes: list[str]) -> Path:
    for i, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for j in range(2):
            Image.new("RGB", (32, 32), (60 * i, 40 * j, 90)).save(root / name / f"{j}.png")
    return root


def _three_class_recipe(tmp_path: Path, num_classes: int) -> Path:
    root = _image_folder(tmp_path / "data", ["cat", "dog", "fox"])
    return write_recipe(
        tmp_path,
        TINY_CLS,
        _base_=None,
        model={"num_classes": num_classes},
        data={
            "type": "imagefolder",
            "batch_size": 2,
            "shapes": None,
            "train": {"root": str(root)},
            "val": {"root": str(root)},
        },
    )


@pytest.mark.parametrize("num_classes", [2, 5])
def test_a_classifier_head_that_does_not_fit_the_class_folders_stops_before_training(tmp_path, capsys, num_classes):
    # 2 outputs for 3 folders used to end in IndexError ("Target 2 is out of bounds"); 5 trained silently.
    assert main([str(_three_class_recipe(tmp_path, num_classes))]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"accel-trainer: error: model.num_classes = {num_classes} but the train dataset has 3 classes "
        f"(data.train.root = {tmp_path / 'data'}); set model.num_classes = 3"
    ]
    assert not [p for p in (tmp_path / "work").glob("checkpoints/*") if p.is_dir()]  # no checkpoint written


def test_a_coco_recipe_without_num_classes_is_refused_with_the_files_count(tmp_path, capsys):
    # A detection recipe that sets no num_classes gets mmdet's 80; a COCO file of 3 categories must
    # not silently train that head.
    images, ann_file = make_coco(tmp_path / "coco")
    split = {"root": str(images), "ann_file": str(ann_file)}
    recipe = write_recipe(
        tmp_path,
        TINY_DET,
        _base_=None,
        model={"num_classes": None},
        data={"type": "coco", "batch_size": 3, "shapes": None, "train": split, "val": split},
    )
    assert main([str(recipe)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("accel-trainer: error: model.num_classes = 80 but the train dataset has 3 classes")
    assert err.endswith("set model.num_classes = 3") and "\n" not in err


def test_mmcvs_custom_hooks_entry_is_accepted_and_checks_once(tiny_recipe):
    recipe = load_recipe(tiny_recipe, {"custom_hooks": [{"type": "NumClassCheckHook"}]})
    trainer = Trainer(recipe)
    assert sum(isinstance(h, NumClassCheckHook) for h in trainer.hooks) == 1
    without = Trainer(load_recipe(tiny_recipe, {"custom_hooks": []}))
    assert sum(isinstance(h, NumClassCheckHook) for h in without.hooks) == 1
