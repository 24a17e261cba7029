"""Detection through the real Trainer: each head trains and evaluates, metrics are pycocotools', the
val pass leaves BatchNorm alone, norm_eval / frozen_stages hold, and DDP counts each image once."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import timm
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from accel_trainer import Trainer, load_recipe
from accel_trainer.data.coco import BBOX_METRIC_KEYS, RandomRescale
from accel_trainer.errors import RecipeError
from accel_trainer.recipe.model_section import ModelCfg
from accel_trainer.tasks.detection import DetectionTask, loss_mode
from accel_trainer.tasks.detector import build_detector

from .helpers.datasets import make_coco
from .helpers.launch import launch
from .helpers.recipes import TINY_DET, det_recipe, write_recipe
from .helpers.records import read_records

HEAD_LOSSES = {
    "fcos": {"loss_cls", "loss_bbox", "loss_centerness"},
    "retinanet": {"loss_cls", "loss_bbox"},
    "faster_rcnn": {"loss_cls", "loss_bbox", "loss_rpn_cls", "loss_rpn_bbox"},
}


def rescore(ann_file: Path, predictions: Path, image_ids: list[int]) -> list[float]:
    gt = COCO(str(ann_file))
    evaluator = COCOeval(gt, gt.loadRes(str(predictions)), "bbox")
    evaluator.params.imgIds = image_ids
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    return [float(v) for v in evaluator.stats[:6]]


def bn_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {
        f"{name}.{key}": value.clone()
        for name, m in module.named_modules()
        if isinstance(m, _BatchNorm)
        for key, value in (("mean", m.running_mean), ("var", m.running_var), ("weight", m.weight.detach()))
    }


@pytest.mark.parametrize("head", ["fcos", "retinanet", "faster_rcnn"])
def test_each_head_trains_and_evaluates_and_predictions_rescore_the_same(tmp_path, head):
    trainer = Trainer.from_recipe(det_recipe(tmp_path, head))
    trainer.fit()
    records = read_records(trainer.work_dir)
    train = [r for r in records if r["mode"] == "train"]
    (val,) = [r for r in records if r["mode"] == "val"]
    assert len(train) == 2 and HEAD_LOSSES[head] | {"loss"} <= set(train[0])
    assert train[0]["loss"] == pytest.approx(sum(train[0][k] for k in HEAD_LOSSES[head]), rel=1e-4)
    assert val["num_samples"] == 6
    assert set(BBOX_METRIC_KEYS) | HEAD_LOSSES[head] | {"loss"} <= set(val)
    assert math.isfinite(val["loss"]) and val["loss"] > 0
    assert all(-1.0 <= val[k] <= 1.0 for k in BBOX_METRIC_KEYS)

    predictions = tmp_path / "predictions.bbox.json"
    trainer.task.write_predictions(predictions)
    results = json.loads(predictions.read_text())
    assert results, "score_thresh = 0 must leave detections"
    assert {r["category_id"] for r in results} <= {1, 3, 5, 7}
    assert {r["image_id"] for r in results} <= set(range(1, 7))
    assert all(len(r["bbox"]) == 4 and r["bbox"][2] >= 0 and r["bbox"][3] >= 0 for r in results)
    ann_file = trainer.task.data_paths()["val_ann"]
    assert rescore(ann_file, predictions, list(range(1, 7))) == pytest.approx([val[k] for k in BBOX_METRIC_KEYS])


class OracleDetector(nn.Module):
    """Answers each val image with its own ground truth (found by the image's bytes)."""

    def __init__(self, dataset, label_offset: int, shift: float = 0.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(()))
        self.transform = SimpleNamespace(_skip_resize=False)
        self.label_offset = label_offset
        self.shift = shift
        self.truth = {image.numpy().tobytes(): target for image, target in (dataset[i] for i in range(len(dataset)))}

    def forward(self, images, targets=None):
        if self.training:
            return {"classification": self.weight + 0.5}
        out = []
        for image in images:
            target = self.truth[image.numpy().tobytes()]
            n = len(target["labels"])
            out.append(
                {
                    "boxes": target["boxes"] + self.shift,
                    "labels": target["labels"] + self.label_offset,
                    "scores": torch.ones(n),
                }
            )
        return out


@pytest.mark.parametrize("head, offset", [("fcos", 0), ("faster_rcnn", 1)])
def test_ground_truth_as_detections_scores_map_1(tmp_path, head, offset):
    """Labels map back to the file's non-contiguous category ids and boxes to xywh exactly."""
    recipe = load_recipe(det_recipe(tmp_path, head))
    train_set, val_set = DetectionTask(recipe).build_datasets()
    trainer = Trainer(recipe, model=OracleDetector(val_set, offset), train_dataset=train_set, val_dataset=val_set)
    results = trainer.evaluate()
    assert results["num_samples"] == 6 and results["loss"] == pytest.approx(0.5)
    assert results["bbox_mAP"] == pytest.approx(1.0) and results["bbox_mAP_75"] == pytest.approx(1.0)


def test_written_predictions_rescore_to_the_logged_metrics(tmp_path):
    """Shifted ground truth scores between 0 and 1; pycocotools on the written file agrees."""
    recipe = load_recipe(det_recipe(tmp_path))
    task = DetectionTask(recipe)
    train_set, val_set = task.build_datasets()
    trainer = Trainer(recipe, model=OracleDetector(val_set, 0, shift=1.5), train_dataset=train_set, val_dataset=val_set)
    results = trainer.evaluate()
    assert 0.0 < results["bbox_mAP"] < results["bbox_mAP_50"] <= 1.0
    predictions = tmp_path / "predictions.bbox.json"
    trainer.task.write_predictions(predictions)
    logged = [results[k] for k in BBOX_METRIC_KEYS]
    assert rescore(task.data_paths()["val_ann"], predictions, list(range(1, 7))) == pytest.approx(logged)


def test_validation_leaves_running_stats_rng_and_modes_alone(tmp_path):
    trainer = Trainer.from_recipe(det_recipe(tmp_path, "faster_rcnn"))
    model = trainer.unwrapped_model
    trainer.call("before_run")
    before = bn_state(model)
    rng = torch.get_rng_state()
    first = trainer.validate()
    second = trainer.validate()
    after = bn_state(model)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert torch.equal(rng, torch.get_rng_state())
    assert first["loss"] == second["loss"] and first["bbox_mAP"] == second["bbox_mAP"]
    assert model.training and all(m.training for m in model.modules() if isinstance(m, _BatchNorm))


def test_loss_mode_trains_without_norm_updates_and_resizes_like_eval():
    model = build_detector(
        ModelCfg(task="detection", backbone="resnet10t", num_classes=4, min_size=32, max_size=32), skip_resize=True
    )
    assert model.transform._skip_resize
    model.eval()
    with loss_mode(model, torch.device("cpu")):
        assert model.training and not model.transform._skip_resize
        assert not any(m.training for m in model.modules() if isinstance(m, _BatchNorm))
    assert not model.training and model.transform._skip_resize


@pytest.mark.parametrize("norm_eval", [True, False])
def test_norm_eval_keeps_backbone_running_stats(tmp_path, norm_eval):
    trainer = Trainer.from_recipe(
        det_recipe(tmp_path), overrides={"model.norm_eval": norm_eval, "workflow": [["train", 1]]}
    )
    body = trainer.unwrapped_model.backbone.body
    before = bn_state(body)
    trainer.fit()
    after = bn_state(body)
    stats_kept = all(torch.equal(before[k], after[k]) for k in before if not k.endswith(".weight"))
    weights_kept = all(torch.equal(before[k], after[k]) for k in before if k.endswith(".weight"))
    assert stats_kept == norm_eval
    assert not weights_kept  # norm_eval freezes statistics, not the affine parameters


def test_frozen_stages_stay_frozen_through_a_freeze_stage(tmp_path):
    """mmdet's frozen_stages = 1: stem and layer1 never change, even after [freeze] thaws the backbone."""
    trainer = Trainer.from_recipe(
        det_recipe(tmp_path),
        overrides={
            "model.frozen_stages": 1,
            "freeze": {"modules": ["backbone"], "epochs": 1},
            "runner.max_epochs": 2,
            "workflow": [["train", 1]],
        },
    )
    body = trainer.unwrapped_model.backbone.body
    start = {k: v.clone() for k, v in body.state_dict().items()}
    fpn_start = {k: v.clone() for k, v in trainer.unwrapped_model.backbone.fpn.state_dict().items()}
    trainer.fit()
    end = body.state_dict()
    frozen = ("conv1.", "bn1.", "layer1.")
    assert all(torch.equal(start[k], end[k]) for k in start if k.startswith(frozen))
    assert not all(torch.equal(start[k], end[k]) for k in start if k.startswith("layer2."))
    fpn_end = trainer.unwrapped_model.backbone.fpn.state_dict()
    assert not all(torch.equal(fpn_start[k], fpn_end[k]) for k in fpn_start)
    assert not any(p.requires_grad for n, p in body.named_parameters() if n.startswith(frozen))
    assert all(p.requires_grad for n, p in body.named_parameters() if n.startswith("layer2."))
    assert not body.layer1.training and body.layer2.training


def test_model_keys_reach_torchvision():
    m = dict(task="detection", backbone="resnet10t", num_classes=4, min_size=48, max_size=96)
    fcos = build_detector(
        ModelCfg(head="fcos", score_thresh=0.05, nms_thresh=0.5, detections_per_img=7, topk_candidates=11, **m)
    )
    assert fcos.transform.min_size == (48,) and fcos.transform.max_size == 96
    assert (fcos.score_thresh, fcos.nms_thresh, fcos.detections_per_img, fcos.topk_candidates) == (0.05, 0.5, 7, 11)
    assert fcos.head.classification_head.num_classes == 4
    assert list(fcos.transform.image_mean) == list(timm.get_pretrained_cfg("resnet10t").mean)
    assert len(fcos.anchor_generator.sizes) == 5
    rcnn = build_detector(ModelCfg(head="faster_rcnn", score_thresh=0.3, detections_per_img=9, **m))
    assert rcnn.roi_heads.box_predictor.cls_score.out_features == 5  # 4 classes + background
    assert (rcnn.roi_heads.score_thresh, rcnn.roi_heads.detections_per_img) == (0.3, 9)
    assert len(rcnn.rpn.anchor_generator.sizes) == 5
    with pytest.raises(RecipeError, match="topk_candidates"):
        build_detector(ModelCfg(head="faster_rcnn", topk_candidates=10, **m))
    with pytest.raises(RecipeError, match="frozen_stages = 5"):
        build_detector(ModelCfg(head="fcos", frozen_stages=5, **m))


def test_pretrained_local_file_loads_into_the_trunk(tmp_path):
    source = timm.create_model("resnet10t", num_classes=10)
    weights = tmp_path / "resnet10t.pth"
    torch.save(source.state_dict(), weights)
    model = build_detector(ModelCfg(task="detection", backbone="resnet10t", num_classes=4, pretrained=str(weights)))
    body = model.backbone.body
    assert torch.equal(body.conv1[0].weight, source.conv1[0].weight)
    assert torch.equal(body.layer4[0].conv1.weight, source.layer4[0].conv1.weight)


def test_num_class_check_names_the_category_count(tmp_path):
    trainer = Trainer.from_recipe(det_recipe(tmp_path), overrides={"model.num_classes": 5})
    with pytest.raises(RecipeError, match="has 4 classes"):
        trainer.fit()


def test_scale_jitter_moves_the_training_resize_into_the_data(tmp_path):
    trainer = Trainer.from_recipe(
        det_recipe(tmp_path), overrides={"data.augment.scale": [0.5, 1.5], "workflow": [["train", 1]]}
    )
    assert trainer.unwrapped_model.transform._skip_resize
    assert any(isinstance(t, RandomRescale) for t in trainer.train_dataset.transforms.transforms)
    trainer.fit()
    assert trainer.iter == 2


def test_coco_data_with_an_unreadable_val_image_is_evaluated_without_it(tmp_path):
    images, ann_file = make_coco(tmp_path / "coco")
    (images / "3.png").write_bytes(b"broken")
    overrides = {
        "data.type": "coco",
        "data.train": {"root": str(images), "ann_file": str(ann_file)},
        "data.val": {"root": str(images), "ann_file": str(ann_file)},
        "data.skip_bad_images": True,
        "data.batch_size": 2,
        "model.num_classes": 3,
    }
    trainer = Trainer.from_recipe(det_recipe(tmp_path), overrides=overrides)
    trainer.fit()
    (val,) = [r for r in read_records(trainer.work_dir) if r["mode"] == "val"]
    assert val["num_samples"] == 2
    assert {p["image_id"] for p in trainer.task.predictions} <= {1, 2}


@pytest.mark.multiprocess
def test_two_processes_count_every_val_image_once(tmp_path):
    recipe = write_recipe(tmp_path, TINY_DET, name="det.toml", data={"batch_size": 2, "shapes": {"num_val": 5}})
    proc = launch(recipe, "--eval-only")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "MULTI_CPU, 2 processes" in next((tmp_path / "work").glob("*.log")).read_text()
    out = tmp_path / "work" / "eval"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_samples"] == 5
    predictions = out / "predictions.bbox.json"
    per_image: dict[int, int] = {}
    for r in json.loads(predictions.read_text()):
        per_image[r["image_id"]] = per_image.get(r["image_id"], 0) + 1
    assert set(per_image) <= set(range(1, 6)) and max(per_image.values()) <= 100
    recipe_obj = load_recipe(recipe)
    ann_file = DetectionTask(recipe_obj).data_paths()["val_ann"]
    assert rescore(ann_file, predictions, list(range(1, 6))) == pytest.approx([metrics[k] for k in BBOX_METRIC_KEYS])
