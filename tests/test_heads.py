"""The heads table: every entry builds a detector that trains a step and predicts through the task,
and a name the table lacks is refused with the names it has."""

from __future__ import annotations

import pytest
import timm
import torch

from accel_trainer import load_recipe
from accel_trainer.errors import RecipeError
from accel_trainer.recipe.model_section import ModelCfg
from accel_trainer.recipe.root import Recipe
from accel_trainer.tasks.detection import DetectionTask
from accel_trainer.tasks.detector import build_detector
from accel_trainer.tasks.heads import HEADS

TINY_MODEL = {"task": "detection", "backbone": "resnet10t", "num_classes": 3, "min_size": 32, "max_size": 32}
KNOWN = "expected one of: 'fcos', 'retinanet', 'faster_rcnn'"


def detection_recipe(**model) -> Recipe:
    return Recipe.from_dict(
        {"model": {**TINY_MODEL, **model}, "data": {"type": "shapes"}, "runner": {"max_epochs": 1}}, check_files=False
    )


@pytest.mark.parametrize("name", list(HEADS))
def test_every_head_trains_a_step_and_predicts_records(name):
    torch.manual_seed(0)
    task = DetectionTask(detection_recipe(head=name))
    assert task.label_offset == HEADS[name].label_offset
    model = task.build_model()
    images = [torch.rand(3, 32, 32) for _ in range(2)]
    targets = [
        {"boxes": torch.tensor([[2.0, 3.0, 20.0, 24.0]]), "labels": torch.tensor([0])},
        {"boxes": torch.tensor([[8.0, 8.0, 30.0, 28.0], [1.0, 1.0, 9.0, 12.0]]), "labels": torch.tensor([2, 1])},
    ]
    model.train()
    loss, logged = task.train_loss(model, (images, targets))
    assert torch.isfinite(loss) and loss > 0 and set(logged) > {"loss"}
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    loss.backward()
    optimizer.step()
    assert any(not torch.equal(before[n], p) for n, p in model.named_parameters() if n in before)

    model.eval()
    with torch.no_grad():
        outputs = task.predict_batch(model, images, torch.device("cpu"))
    records = task.prediction_records(
        outputs, ["a.png", None], [(32, 32), (32, 32)], ["x", "y", "z"], [1, 5, 7], topk=5, score_thresh=None
    )
    assert [r["file"] for r in records] == ["a.png", None]
    assert all(set(r["labels"]) <= {"x", "y", "z"} and set(r["category_ids"]) <= {1, 5, 7} for r in records)


@pytest.mark.parametrize("name", list(HEADS))
def test_backbone_weights_are_the_plain_timm_trunk(name):
    task = DetectionTask(detection_recipe(head=name))
    trunk = task.backbone_weights(task.build_model().state_dict())
    plain = timm.create_model("resnet10t", num_classes=0)
    assert trunk.keys() == plain.state_dict().keys()
    plain.load_state_dict(trunk)


def test_a_name_the_table_lacks_is_refused_at_load_with_the_names_it_has(tmp_path):
    recipe = tmp_path / "det.toml"
    recipe.write_text('[model]\ntask = "detection"\nhead = "yolo"\n[data]\ntype = "shapes"\n[runner]\nmax_epochs = 1\n')
    with pytest.raises(RecipeError) as refused:
        load_recipe(recipe, check_files=False)
    assert str(refused.value) == f"{recipe}: model.head = 'yolo' is not allowed; {KNOWN}"
    with pytest.raises(RecipeError) as refused:
        load_recipe(recipe, {"model.head": "fcoss"}, check_files=False)
    assert str(refused.value) == f"{recipe}: model.head = 'fcoss' is not allowed (did you mean \"fcos\"?); {KNOWN}"


def test_a_recipe_built_without_loading_is_refused_when_the_detector_is_built():
    recipe = detection_recipe(head="yolo")
    for build in (lambda: DetectionTask(recipe), lambda: build_detector(recipe.model)):
        with pytest.raises(RecipeError, match=f"model.head = 'yolo' is not allowed; {KNOWN}"):
            build()


def test_a_post_processing_key_a_head_lacks_names_the_heads_that_take_it():
    with pytest.raises(RecipeError) as refused:
        build_detector(ModelCfg(**TINY_MODEL, head="faster_rcnn", topk_candidates=10))
    assert str(refused.value) == 'model.topk_candidates is an FCOS/RetinaNet setting; head = "faster_rcnn" has none'
