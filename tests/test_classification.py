from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from timm.loss import SoftTargetCrossEntropy

from accel_trainer import Trainer, load_recipe
from accel_trainer.recipe.data_section import AugmentCfg
from accel_trainer.tasks.classification import ClassificationTask

from .helpers.recipes import write_recipe
from .helpers.records import read_records


def test_mixup_trains_on_full_batches_only(tiny_recipe):
    # 21 training images in batches of 4: the last batch would hold one image, which timm's
    # Mixup (it pairs each sample with the reversed batch) rejects; training batches must be full.
    overrides = {
        "data.shapes.num_train": 21,
        "data.batch_size": 4,
        "data.augment.mixup": 0.2,
        "data.augment.cutmix": 1.0,
        "data.augment.label_smoothing": 0.1,
        "runner.max_epochs": 1,
    }
    trainer = Trainer(load_recipe(tiny_recipe, overrides))
    assert isinstance(trainer.task.criterion, SoftTargetCrossEntropy)
    assert len(trainer.train_loader) == 5 and len(trainer.val_loader) == 6  # val keeps every sample
    trainer.fit()
    (val,) = [r for r in read_records(trainer.work_dir) if r["mode"] == "val"]
    assert val["num_samples"] == 21 and trainer.iter == 5


def test_a_last_batch_of_one_is_left_out_of_training(tiny_recipe):
    # 21 images in batches of 4 at 32 px: a last training batch of one image would reach BatchNorm
    # on 1x1 feature maps as a single value per channel, which it refuses (as timm: full batches).
    overrides = {"data.shapes.num_train": 21, "data.batch_size": 4, "runner.max_epochs": 1}
    trainer = Trainer(load_recipe(tiny_recipe, overrides))
    assert len(trainer.train_loader) == 5 and len(trainer.val_loader) == 6
    trainer.fit()
    assert trainer.iter == 5


def test_mixup_targets_are_soft_and_sum_to_one(tiny_recipe):
    recipe = load_recipe(tiny_recipe, {"data.augment.mixup": 0.8, "data.augment.label_smoothing": 0.1})
    task = ClassificationTask(recipe)
    images, labels = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
    _, targets = task.mixup(images, labels)
    assert targets.shape == (4, 4) and torch.allclose(targets.sum(1), torch.ones(4))
    assert (targets > 0).sum() > 4  # two classes per row (plus smoothing), not one-hot
    without = ClassificationTask(load_recipe(tiny_recipe))
    assert without.mixup is None


@pytest.mark.parametrize("num_classes, keys", [(4, ("top1",)), (5, ("top1",)), (6, ("top1", "top5"))])
def test_top5_is_reported_only_with_more_than_5_classes(tiny_recipe, num_classes, keys):
    task = ClassificationTask(load_recipe(tiny_recipe, {"model.num_classes": num_classes}))
    logits = torch.randn(3, num_classes)
    task.val_step(
        lambda images: logits,
        (torch.zeros(3, 3, 8, 8), torch.tensor([0, 1, 2])),
        SimpleNamespace(gather_for_metrics=lambda values: values),
    )
    metrics = task.compute_metrics()
    assert task.metric_keys == keys and {"top1", "top5"} & metrics.keys() == set(keys)


def test_a_short_run_with_the_default_augmentation(tmp_path):
    # The README's classification defaults as they are (no [data.augment] table: timm's RandAugment
    # "rand-m9-mstd0.5-inc1", colour jitter, label smoothing): a fresh install must train with them.
    # 800 draws at seed 0 reach a posterize that keeps 0 bits, which Pillow 13 refuses.
    recipe = load_recipe(write_recipe(tmp_path, data={"augment": None, "shapes": {"num_train": 400}}))
    assert recipe.data.augment == AugmentCfg()
    trainer = Trainer(recipe)
    trainer.fit()
    assert trainer.iter == 2 * 25
