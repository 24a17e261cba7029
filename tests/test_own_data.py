"""Bring-your-own datasets: a detection val set is scored against its own targets, a classification
dataset may yield PIL images, and targets of the wrong shape are errors that say what is expected."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import Dataset
from torchvision.datasets import ImageFolder

from accel_trainer import Trainer, load_recipe
from accel_trainer.errors import RecipeError

from .helpers.recipes import det_recipe


class PlainDetection(Dataset):
    """The user's detection data: (image, {"boxes", "labels"}) with no image_id, no COCO file."""

    def __init__(self, base, drop_boxes: bool = False) -> None:
        self.base, self.drop_boxes = base, drop_boxes
        self.classes = base.classes

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int):
        image, target = self.base[index]
        if self.drop_boxes:
            return image, {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
        return image, {"boxes": target["boxes"], "labels": target["labels"]}


def test_own_detection_val_set_is_scored_against_its_own_targets(tmp_path):
    recipe = load_recipe(det_recipe(tmp_path), {"workflow": [["train", 1]], "model.score_thresh": 0.0})
    trainer = Trainer(recipe)
    trainer.fit()
    builtin = trainer.evaluate()
    state = trainer.unwrapped_model.state_dict()
    own = Trainer(recipe, val_dataset=PlainDetection(trainer.val_dataset))
    own.unwrapped_model.load_state_dict(state)
    mine = own.evaluate()
    for key in ("bbox_mAP", "bbox_mAP_50", "num_samples"):
        assert mine[key] == pytest.approx(builtin[key], abs=1e-9), key
    empty = Trainer(recipe, val_dataset=PlainDetection(trainer.val_dataset, drop_boxes=True))
    empty.unwrapped_model.load_state_dict(state)
    assert empty.evaluate()["bbox_mAP"] == -1.0  # no ground truth in *this* val set, whatever the recipe's says


class BadTargets(PlainDetection):
    def __getitem__(self, index: int):
        image, _ = self.base[index]
        return image, {"boxes": torch.zeros(3), "labels": torch.zeros(3, dtype=torch.int64)}


def test_a_wrongly_shaped_detection_target_names_the_contract(tmp_path):
    trainer = Trainer(load_recipe(det_recipe(tmp_path), {"workflow": [["train", 1]]}))
    trainer = Trainer(trainer.recipe, train_dataset=BadTargets(trainer.train_dataset))
    with pytest.raises(RecipeError, match=r'"boxes" is \(3,\); expected \(image, target\).*N x 4'):
        trainer.fit()


def test_classification_dataset_of_pil_images_gets_the_recipe_transforms(tiny_recipe):
    recipe = load_recipe(tiny_recipe, {"runner.max_epochs": 1})
    built = Trainer(recipe)
    train = ImageFolder(built.train_dataset.root)  # no transform: yields PIL images
    val = ImageFolder(built.val_dataset.root)
    trainer = Trainer(recipe, train_dataset=train, val_dataset=val)
    trainer.fit()
    assert trainer.val_results["num_samples"] == 21 and trainer.iter == 8
    bad = Trainer(recipe, train_dataset=[("not an image", 0)] * 16, val_dataset=val)
    with pytest.raises(RecipeError, match=r"a sample is \(str, int\); expected \(image, label\)"):
        bad.fit()
