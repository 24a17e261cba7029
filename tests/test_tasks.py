from __future__ import annotations

from types import SimpleNamespace

import pytest

from accel_trainer.data.coco import collate_detection
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
