"""Per-section checks: ranges the types alone let through, refused by name before anything is built."""

from __future__ import annotations

import subprocess
import sys

import pytest

from accel_trainer import RecipeError, load_recipe
from accel_trainer.recipe.reading import parse_override
from accel_trainer.recipe.root import Recipe
from accel_trainer.recipe.training_sections import GradClipCfg


@pytest.mark.parametrize(
    "override, message",
    [
        ({"optimizer.lr": float("inf")}, "optimizer.lr = inf: must be a finite number"),
        (
            {"optimizer_config.grad_clip": {"max_norm": 0}},
            "optimizer_config.grad_clip.max_norm = 0 must be a finite number > 0",
        ),
        ({"optimizer_config.grad_clip": {"max_norm": -1.5}}, "optimizer_config.grad_clip.max_norm = -1.5"),
        ({"optimizer_config.grad_clip": {"norm_type": 2}}, "optimizer_config.grad_clip needs max_norm"),
        ({"data.augment.hflip": 5}, "data.augment.hflip = 5.0 must be between 0 and 1"),
        ({"data.augment.scale": [2, 1]}, "data.augment.scale = [2.0, 1.0] is not [min, max] with 0 < min <= max"),
        ({"data.shapes.num_train": 0}, "data.shapes.num_train = 0 must be > 0"),
        ({"model.drop_rate": 2}, "model.drop_rate = 2.0 must be in [0, 1)"),
        ({"freeze": {"epochs": 1}}, "freeze.epochs is set but freeze.modules is empty"),
        ({"ema.decay": 1.0}, "ema.decay = 1.0 must be between 0 and 1"),
    ],
)
def test_section_ranges_are_refused_by_name(tiny_recipe, override, message):
    with pytest.raises(RecipeError) as info:
        load_recipe(tiny_recipe, override)
    assert message in str(info.value)


def test_grad_clip_is_typed_and_keeps_the_written_numbers(tiny_recipe):
    recipe = load_recipe(tiny_recipe, {"optimizer_config.grad_clip": {"max_norm": 35, "norm_type": 2}})
    assert recipe.optimizer_config.grad_clip == GradClipCfg(max_norm=35, norm_type=2)
    assert recipe.to_dict()["optimizer_config"]["grad_clip"] == {"max_norm": 35, "norm_type": 2}


def test_defaults_are_checked_too():
    """A section left out entirely still gets its rules: imagefolder without roots is refused."""
    with pytest.raises(RecipeError, match="data.train.root is empty"):
        Recipe.from_dict({"runner": {"max_epochs": 1}})


def test_deeply_nested_set_path_or_value_is_a_recipe_error(tiny_recipe):
    with pytest.raises(RecipeError, match="no recipe key is that deep"):
        parse_override(".".join(["a"] * 5000) + "=1")
    with pytest.raises(RecipeError, match="nested"):
        key, value = parse_override("model.x=" + "[" * 5000 + "]" * 5000)
        load_recipe(tiny_recipe, {key: value})
    with pytest.raises(RecipeError, match="no recipe key is that deep"):
        load_recipe(tiny_recipe, {".".join(["a"] * 5000): 1})


def test_deep_set_from_the_command_line_exits_2_without_traceback(tiny_recipe):
    deep = ".".join(["a"] * 5000) + "=1"
    proc = subprocess.run(
        [sys.executable, "-m", "accel_trainer", str(tiny_recipe), "--print-recipe", "--set", deep],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("accel-trainer: error: --set a.a.a")
