from __future__ import annotations

from types import SimpleNamespace

import pytest

from accel_trainer.data.coco import collate_detection
from accel_trainer.errors import RecipeError
from accel_trainer.recipe.root import Recipe
from accel_trainer.tasks import Task, build_task
from accel_trainer.tasks.classification import ClassificationTask
from accel_trainer.tasks.detection import DetectionTask


def test_build_task_picks_by_model_task(tmp_path):
    cls = Recipe.from_dict({"data": {"type": "shapes"}, "runner": {"max_epochs": 1}})
    det = Recipe.from_dict({"model": {"task": "detection"}, "data": {"type": "shapes"}, "runner": {"max_epochs": 1}})
    assert type(build_task(cls)) is ClassificationTask
    assert type(build_task(det)) is DetectionTask
    assert isinstance(build_task(det), Task)


def test_describe_data_names_the_recipe_key(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "ann.json").write_text("{}")
    cls = Recipe.from_dict(
        {
            "data": {
                "type": "imagefolder",
                "train": {"root": str(tmp_path / "a")},
                "val": {"root": str(tmp_path / "b")},
            },
            "runner": {"max_epochs": 1},
        }
    )
    assert build_task(cls).describe_data("val") == f"data.val.root = {tmp_path / 'b'}"
    det = Recipe.from_dict(
        {
            "model": {"task": "detection"},
            "data": {
                "type": "coco",
                "train": {"root": str(tmp_path / "a"), "ann_file": str(tmp_path / "ann.json")},
                "val": {"root": str(tmp_path / "b"), "ann_file": str(tmp_path / "ann.json")},
            },
            "runner": {"max_epochs": 1},
        }
    )
    assert build_task(det).describe_data("train") == f"data.train.ann_file = {tmp_path / 'ann.json'}"
    shapes = Recipe.from_dict({"data": {"type": "shapes"}, "runner": {"max_epochs": 1}})
    assert build_task(shapes).describe_data("train") == "built-in shapes data"


def test_dataset_classes_and_detection_collate():
    assert Task.num_dataset_classes(SimpleNamespace(classes=["a", "b", "c"])) == 3
    assert Task.num_dataset_classes(object()) is None
    det = build_task(
        Recipe.from_dict({"model": {"task": "detection"}, "data": {"type": "shapes"}, "runner": {"max_epochs": 1}})
    )
    assert det.collate_fn is collate_detection
    with pytest.raises(NotImplementedError):
        Task(det.recipe).build_model()


def test_each_task_says_how_its_images_are_prepared_and_its_trunk_exported():
    """What predict and export ask a task instead of testing its name."""
    from PIL import Image

    cls = build_task(
        Recipe.from_dict(
            {
                "model": {"backbone": "resnet10t", "num_classes": 4},
                "data": {"type": "shapes", "img_size": 32},
                "runner": {"max_epochs": 1},
            }
        )
    )
    det = build_task(
        Recipe.from_dict(
            {"model": {"task": "detection", "min_size": 48}, "data": {"type": "shapes"}, "runner": {"max_epochs": 1}}
        )
    )
    image = Image.new("RGB", (40, 30))
    assert cls.input_size() == 32 and tuple(cls.val_transform()(image).shape) == (3, 32, 32)
    assert det.input_size() == 48 and tuple(det.val_transform()(image).shape) == (3, 30, 40)  # the detector resizes
    state = {"conv1.weight": 1, "fc.weight": 2, "fc.bias": 3, "fcx.weight": 4}
    assert cls.backbone_weights(state) == {"conv1.weight": 1, "fcx.weight": 4}
    assert det.backbone_weights({"backbone.body.conv1.weight": 1, "backbone.fpn.x": 2, "head.y": 3}) == {
        "conv1.weight": 1
    }
    with pytest.raises(RecipeError, match='visualize draws boxes; .* not "detection"'):
        cls.check_visualize()
    det.check_visualize()


def test_building_the_datasets_logs_each_splits_images_and_classes(tmp_path, capsys):
    from accel_trainer import Trainer, load_recipe

    from .helpers.recipes import det_recipe, write_recipe

    Trainer(load_recipe(write_recipe(tmp_path)))
    out = capsys.readouterr().out
    assert "train: 128 images, 4 classes from built-in shapes data" in out
    assert "val: 21 images, 4 classes from built-in shapes data" in out
    Trainer(load_recipe(det_recipe(tmp_path)))
    out = capsys.readouterr().out
    assert "train: 8 images, 4 classes from built-in shapes data" in out and "val: 6 images, 4 classes" in out
