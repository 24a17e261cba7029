"""Defaults per task (timm's for classification, mmdet's for detection) and keys a task never reads."""

from __future__ import annotations

import subprocess
import sys

import pytest

from accel_trainer import load_recipe
from accel_trainer.cli import main
from accel_trainer.errors import RecipeError
from accel_trainer.recipe.data_section import VOC_CLASSES
from accel_trainer.recipe.reading import dump_toml
from accel_trainer.recipe.root import Recipe

from .helpers import REPO
from .helpers.recipes import RUNTIME, write_recipe

# Written from scratch: a task, a backbone and the shapes data on the runtime, nothing else.
SCRATCH_DET = {
    "work_dir": None,
    "model": {"task": "detection", "backbone": "resnet10t"},
    "data": {"_delete_": True, "type": "shapes"},
    "runner": {"max_epochs": 1},
}


def test_a_detection_recipe_written_from_scratch_gets_mmdet_defaults(tmp_path):
    recipe = load_recipe(write_recipe(tmp_path, SCRATCH_DET), check_files=False)
    aug = recipe.data.augment
    assert aug.scale == [1.0, 1.0] and aug.hflip == 0.5 and aug.color_jitter == 0.0 and not aug.resizes
    assert (recipe.data.batch_size, recipe.data.num_workers, recipe.model.num_classes) == (2, 2, 80)
    printed = recipe.to_dict()
    assert printed["data"]["augment"] == {
        "scale": [1.0, 1.0],
        "hflip": 0.5,
        "color_jitter": 0.0,
        "mosaic": 0.0,
        "mosaic_epochs": 0,
        "scales": [],
        "multiscale_mode": "range",
    }
    assert "drop_rate" not in printed["model"] and "img_size" not in printed["data"] and "train" not in printed["data"]
    assert recipe.lr_config == {"policy": "fixed", "warmup": "linear", "warmup_iters": 500, "warmup_ratio": 0.001}


def test_a_written_lr_config_gets_no_default_warmup(tmp_path):
    recipe = load_recipe(
        write_recipe(tmp_path, SCRATCH_DET), {"lr_config": {"policy": "step", "step": [8, 11]}}, check_files=False
    )
    assert recipe.lr_config == {"policy": "step", "step": [8, 11]}


def test_setting_one_lr_config_key_keeps_the_default_warmup_of_the_rest(tmp_path, capsys):
    # `--set lr_config.warmup_iters=4` on a detector without [lr_config] used to leave a table of
    # one key ("lr_config.policy is missing"); the other keys keep the task's defaults.
    path = write_recipe(tmp_path, SCRATCH_DET)
    recipe = load_recipe(path, {"lr_config.warmup_iters": 4}, check_files=False)
    assert recipe.lr_config == {"policy": "fixed", "warmup": "linear", "warmup_iters": 4, "warmup_ratio": 0.001}
    assert main([str(path), "--set", "lr_config.warmup_iters=4", "--print-recipe"]) == 0
    assert 'policy = "fixed"' in capsys.readouterr().out
    written = write_recipe(tmp_path, SCRATCH_DET, name="step.toml", lr_config={"policy": "step", "step": [8]})
    recipe = load_recipe(written, {"lr_config.gamma": 0.5}, check_files=False)
    assert recipe.lr_config == {"policy": "step", "step": [8], "gamma": 0.5}  # a written table: no warmup added


def test_classification_keeps_timm_defaults_and_prints_no_detection_keys():
    recipe = Recipe.from_dict({"data": {"type": "shapes"}, "runner": {"max_epochs": 1}})
    aug = recipe.data.augment
    assert (aug.scale, aug.color_jitter, aug.auto_augment, aug.label_smoothing) == (
        [0.08, 1.0],
        0.4,
        "rand-m9-mstd0.5-inc1",
        0.1,
    )
    printed = recipe.to_dict()
    assert (
        not {"head", "min_size", "frozen_stages"} & set(printed["model"]) and "mosaic" not in printed["data"]["augment"]
    )


@pytest.mark.parametrize(
    "task, key, value, owner",
    [
        ("detection", "data.augment.mixup", 0.2, "classification"),
        ("detection", "data.augment.auto_augment", "", "classification"),
        ("detection", "data.augment.label_smoothing", 0.1, "classification"),
        ("detection", "data.crop_pct", 1.0, "classification"),
        ("detection", "model.drop_rate", 0.1, "classification"),
        ("classification", "model.head", "fcos", "detection"),
        ("classification", "model.min_size", 600, "detection"),
        ("classification", "model.frozen_stages", 1, "detection"),
        ("classification", "data.augment.mosaic", 1.0, "detection"),
    ],
)
def test_a_key_the_task_does_not_use_is_refused_by_name(task, key, value, owner):
    with pytest.raises(RecipeError) as info:
        Recipe.from_dict(_nested(task, key, value))
    assert str(info.value) == f'{key}: not used by task = "{task}" ({owner} only); remove it'


def _nested(task: str, key: str, value) -> dict:
    data: dict = {"model": {"task": task}, "data": {"type": "shapes"}, "runner": {"max_epochs": 1}}
    *parents, leaf = key.split(".")
    table = data
    for part in parents:
        table = table.setdefault(part, {})
    table[leaf] = value
    return data


def test_set_in_a_base_or_by_set_is_refused_and_the_cli_says_so_in_one_line(tmp_path):
    base = tmp_path / "base.toml"
    base.write_text("[data.augment]\nmixup = 0.2\n")
    recipe = write_recipe(tmp_path, SCRATCH_DET, _base_=[RUNTIME, "base.toml"], data={"_delete_": None})
    proc = subprocess.run(
        [sys.executable, "-m", "accel_trainer", str(recipe), "--print-recipe"], capture_output=True, text=True
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == (
        f'accel-trainer: error: {recipe}: data.augment.mixup: not used by task = "detection" (classification only); '
        "remove it\n"
    )
    with pytest.raises(RecipeError, match='model.norm_eval: not used by task = "classification"'):
        load_recipe(REPO / "recipes/cls.toml", {"model.norm_eval": True}, check_files=False)


def test_voc_defaults_and_split_keys_of_other_data_types(tmp_path):
    recipe = Recipe.from_dict(
        {
            "model": {"task": "detection"},
            "data": {"type": "voc", "train": [{"root": "a"}, {"root": "b"}], "val": {"root": "a"}},
            "runner": {"max_epochs": 1},
        },
        check_files=False,
    )
    assert [t.split for t in recipe.data.splits("train")] == [
        "trainval",
        "trainval",
    ] and recipe.data.val.split == "test"
    assert recipe.model.num_classes == 20 and recipe.data.classes == VOC_CLASSES
    with pytest.raises(
        RecipeError, match=r'data.train\[1\].ann_file: not used by data.type = "voc" \(coco only\); remove it'
    ):
        Recipe.from_dict(
            {
                "model": {"task": "detection"},
                "data": {"type": "voc", "train": [{"root": "a"}, {"root": "b", "ann_file": "x"}]},
                "runner": {"max_epochs": 1},
            },
            check_files=False,
        )
    with pytest.raises(RecipeError, match='data.classes: not used by data.type = "coco" \\(voc only\\)'):
        Recipe.from_dict(
            {"model": {"task": "detection"}, "data": {"type": "coco", "classes": ["a"]}, "runner": {"max_epochs": 1}},
            check_files=False,
        )
    with pytest.raises(RecipeError, match='only data.type = "voc" concatenates'):
        Recipe.from_dict(
            {
                "model": {"task": "detection"},
                "data": {"type": "coco", "train": [{"root": "a"}]},
                "runner": {"max_epochs": 1},
            },
            check_files=False,
        )


def test_the_printed_recipe_of_every_task_loads_again(tmp_path):
    for name in ("det.toml", "cls.toml", "coco/fcos_resnest50d_fpn_1x.toml"):
        first = dump_toml(load_recipe(REPO / "recipes" / name, check_files=False).to_dict())
        again = tmp_path / "again.toml"
        again.write_text(first)
        assert dump_toml(load_recipe(again, check_files=False).to_dict()) == first


@pytest.mark.parametrize(
    "augment, message",
    [
        ({"mosaic": 1.5}, "data.augment.mosaic = 1.5 must be between 0 and 1"),
        ({"scales": [[1333, 0]]}, "data.augment.scales[0] = [1333, 0] is not [long edge, short edge]"),
        ({"scales": [[1333, 640]], "scale": [0.5, 1.5]}, "data.augment.scales and data.augment.scale"),
        ({"scales": [[1333, 640], [1333, 700], [1333, 800]]}, "needs 2 entries"),
        ({"mosaic": 1.0, "mosaic_epochs": 3}, "data.augment.mosaic_epochs = 3 must be less than runner.max_epochs = 3"),
        ({"mosaic_epochs": 1}, "data.augment.mosaic_epochs is set but data.augment.mosaic = 0"),
    ],
)
def test_detection_augment_ranges_are_checked_by_name(augment, message):
    with pytest.raises(RecipeError, match=message.replace("[", r"\[").replace("]", r"\]")):
        Recipe.from_dict(
            {
                "model": {"task": "detection"},
                "data": {"type": "shapes", "augment": augment},
                "runner": {"max_epochs": 3},
            }
        )
