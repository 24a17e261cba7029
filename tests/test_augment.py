from __future__ import annotations

import random

import pytest
from PIL import Image
from timm.data.auto_augment import posterize

from accel_trainer import load_recipe
from accel_trainer.data.augment import train_transform
from accel_trainer.tasks.classification import ClassificationTask


@pytest.mark.parametrize(
    "policy",
    [
        "rand-m10-mstd0-inc1",  # every PosterizeIncreasing draw keeps 0 bits
        "rand-m9-mstd0.5-inc1",  # the default: mstd sampling reaches magnitude 10
        "v0",  # AutoAugment's v0 policy: ('Posterize', 0.8, 2) keeps 0 bits
    ],
)
def test_the_train_transform_survives_posterize_at_the_top_magnitude(tiny_recipe, policy):
    # Pillow 13 refuses posterize with 0 bits kept, which timm's policies ask for at the top
    # magnitudes; the recipe's train transform must survive many draws of each policy.
    recipe = load_recipe(tiny_recipe, {"data.augment.auto_augment": policy, "data.img_size": 8})
    train_tf, _ = ClassificationTask(recipe).transforms()
    image = Image.new("RGB", (10, 10), (200, 120, 40))
    random.seed(0)
    for _ in range(600):
        assert train_tf(image).shape == (3, 8, 8)


def test_posterize_with_zero_bits_is_black_and_other_bits_are_timms():
    # 0 bits: the black image timm's policies were written for (Pillow <= 12's result); 1 to 8 bits
    # go to timm's op unchanged.
    tf = train_transform(8, auto_augment="rand-m10-mstd0-inc1")
    (op,) = [op for t in tf.transforms for op in getattr(t, "ops", ()) if op.name == "PosterizeIncreasing"]
    image = Image.new("RGB", (4, 4), (200, 120, 40))
    assert op.aug_fn(image, 0).getextrema() == ((0, 0), (0, 0), (0, 0))
    for bits in range(1, 9):
        assert op.aug_fn(image, bits).tobytes() == posterize(image, bits).tobytes()
