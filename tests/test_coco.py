"""COCO detection data: contiguous labels and back, crowd/degenerate boxes, bad images, box-aware
transforms, and the pycocotools metrics."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import pytest
import torch
from PIL import Image

from accel_trainer.data.coco import (
    BBOX_METRIC_KEYS,
    CocoDetection,
    RandomRescale,
    coco_backend,
    coco_bbox_metrics,
    collate_detection,
    detection_transforms,
    load_coco,
)
from accel_trainer.data.loader import build_loader
from accel_trainer.errors import RecipeError
from accel_trainer.recipe.root import Recipe

from .helpers.datasets import H, W, make_coco


@pytest.fixture
def coco_set(tmp_path) -> tuple[Path, Path]:
    return make_coco(tmp_path)


def test_labels_are_contiguous_and_map_back_to_category_ids(coco_set):
    ds = CocoDetection(*coco_set, detection_transforms(train=False))
    assert ds.cat_ids == [3, 7, 12] and ds.classes == ["three", "seven", "twelve"]
    assert len(ds) == 3
    image, target = ds[0]
    assert image.shape == (3, H, W) and image.dtype == torch.float32 and image.max() <= 1.0
    assert target["image_id"] == 1
    # The crowd box and the 0.5 px wide box are not training targets.
    assert target["boxes"].tolist() == [[4.0, 5.0, 14.0, 13.0], [20.0, 2.0, 35.0, 22.0]]
    assert target["labels"].tolist() == [2, 0]
    assert [ds.cat_ids[label] for label in target["labels"].tolist()] == [12, 3]
    assert type(target["boxes"]) is torch.Tensor


def test_image_without_boxes_is_kept_with_empty_targets(coco_set):
    ds = CocoDetection(*coco_set, detection_transforms(train=True, hflip=0.5, color_jitter=0.3))
    _, target = ds[1]
    assert target["image_id"] == 2
    assert target["boxes"].shape == (0, 4) and target["labels"].shape == (0,)


def test_missing_image_is_an_error_or_skipped_with_a_warning(coco_set, caplog):
    images, ann_file = coco_set
    (images / "2.png").unlink()
    with pytest.raises(RecipeError, match=r"2\.png.*skip_bad_images"):
        CocoDetection(images, ann_file)
    log = logging.getLogger("accel_trainer")
    log.addHandler(caplog.handler)
    try:
        ds = CocoDetection(images, ann_file, skip_bad_images=True)
    finally:
        log.removeHandler(caplog.handler)
    assert ds.ids == [1, 3]
    assert "skipping 1 of 3 images" in caplog.text and "2.png" in caplog.text


def test_corrupt_image_is_an_error_or_skipped_with_a_count(coco_set):
    images, ann_file = coco_set
    (images / "3.png").write_bytes(b"not a png at all")
    with pytest.raises(RecipeError, match=r"3\.png"):
        CocoDetection(images, ann_file)[2]
    ds = CocoDetection(images, ann_file, skip_bad_images=True)
    assert ds[2] == (None, {"image_id": 3})
    assert ds.num_unreadable == 1
    assert ds[0][0] is not None


def test_missing_annotation_file_names_it(coco_set, tmp_path):
    with pytest.raises(RecipeError, match="nope.json"):
        CocoDetection(coco_set[0], tmp_path / "nope.json")


def test_forced_flip_moves_boxes_and_pixels(coco_set):
    ds = CocoDetection(*coco_set, detection_transforms(train=True, hflip=1.0))
    plain = CocoDetection(*coco_set, detection_transforms(train=False))
    image, target = ds[0]
    original, _ = plain[0]
    assert torch.equal(image, original.flip(-1))
    assert image[:, 0, W - 1].tolist() == [1.0, 1.0, 1.0]
    # x -> W - x: [4, 5, 14, 13] -> [26, 5, 36, 13]; [20, 2, 35, 22] -> [5, 2, 20, 22].
    assert target["boxes"].tolist() == [[26.0, 5.0, 36.0, 13.0], [5.0, 2.0, 20.0, 22.0]]
    assert target["labels"].tolist() == [2, 0]


def test_rescale_follows_the_detector_rule_and_scales_boxes(coco_set):
    # Shorter side 30 -> min_size 60, longer side 80 < max_size: exactly x2.
    ds = CocoDetection(*coco_set, detection_transforms(train=True, rescale=RandomRescale(60, 1000, (1.0, 1.0))))
    image, target = ds[0]
    assert image.shape == (3, 60, 80)
    assert target["boxes"].tolist() == [[8.0, 10.0, 28.0, 26.0], [40.0, 4.0, 70.0, 44.0]]
    # max_size caps the longer side: 40 -> 60 means x1.5 whatever min_size asks.
    ds = CocoDetection(*coco_set, detection_transforms(train=True, rescale=RandomRescale(300, 60, (1.0, 1.0))))
    image, target = ds[0]
    assert image.shape == (3, 45, 60)
    assert target["boxes"].tolist() == [[6.0, 7.5, 21.0, 19.5], [30.0, 3.0, 52.5, 33.0]]


def test_scale_jitter_draws_per_sample_and_keeps_boxes_with_the_image(coco_set):
    ds = CocoDetection(*coco_set, detection_transforms(train=True, rescale=RandomRescale(30, 1000, (0.5, 1.5))))
    sizes = set()
    for seed in range(8):
        torch.manual_seed(seed)
        image, target = ds[0]
        h, w = image.shape[-2:]
        sizes.add((h, w))
        assert 15 <= h <= 45
        scale = torch.tensor([w / W, h / H, w / W, h / H])
        assert torch.allclose(
            target["boxes"], torch.tensor([[4.0, 5.0, 14.0, 13.0], [20.0, 2.0, 35.0, 22.0]]) * scale, atol=1e-4
        )
    assert len(sizes) > 3


def test_boxes_shrunk_below_one_pixel_are_dropped(coco_set):
    ds = CocoDetection(*coco_set, detection_transforms(train=True, rescale=RandomRescale(3, 1000, (1.0, 1.0))))
    _, target = ds[2]  # a 6 px box at x0.1
    assert target["boxes"].shape == (0, 4) and target["labels"].shape == (0,)


def test_loader_collates_lists_of_differently_sized_images(coco_set, tmp_path):
    images, ann_file = coco_set
    Image.new("RGB", (25, 17)).save(images / "2.png")
    ds = CocoDetection(images, ann_file, detection_transforms(train=False))
    recipe = Recipe.from_dict(
        {
            "model": {"task": "detection"},
            "data": {"type": "coco", "num_workers": 0, "pin_memory": False},
            "runner": {"max_epochs": 1},
        }
    )
    loader = build_loader(ds, recipe, batch_size=3, train=False, collate_fn=collate_detection)
    (batch,) = list(loader)
    imgs, targets = batch
    assert [tuple(i.shape) for i in imgs] == [(3, H, W), (3, 17, 25), (3, H, W)]
    assert [t["image_id"] for t in targets] == [1, 2, 3]


def _gt_results(gt) -> list[dict]:
    return [
        {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": list(a["bbox"]), "score": 1.0}
        for a in gt.dataset["annotations"]
        if not a["iscrowd"]
    ]


def test_metrics_are_cocoeval_fractions_and_crowd_regions_are_ignored(coco_set):
    gt = load_coco(coco_set[1])
    perfect = _gt_results(gt)
    metrics, summary = coco_bbox_metrics(gt, perfect, [1, 2, 3])
    assert set(metrics) == set(BBOX_METRIC_KEYS)
    assert metrics["bbox_mAP"] == pytest.approx(1.0) and metrics["bbox_mAP_50"] == pytest.approx(1.0)
    assert "Average Precision" in summary
    # A detection on the crowd region is neither a hit nor a false positive.
    on_crowd = perfect + [{"image_id": 1, "category_id": 7, "bbox": [0.0, 0.0, 30.0, 25.0], "score": 0.9}]
    assert coco_bbox_metrics(gt, on_crowd, [1, 2, 3])[0]["bbox_mAP"] == pytest.approx(1.0)
    # The same box under a wrong category is a false positive ranked first.
    wrong = perfect + [{"image_id": 3, "category_id": 12, "bbox": [1.0, 1.0, 6.0, 6.0], "score": 2.0}]
    assert coco_bbox_metrics(gt, wrong, [1, 2, 3])[0]["bbox_mAP"] < 1.0
    # The caller's dicts are not mutated by COCO.loadRes.
    assert set(perfect[0]) == {"image_id", "category_id", "bbox", "score"}


def test_metrics_without_detections_are_zero(coco_set):
    gt = load_coco(coco_set[1])
    metrics, _ = coco_bbox_metrics(gt, [], [1, 2, 3])
    assert metrics["bbox_mAP"] == 0.0 and metrics["bbox_mAP_50"] == 0.0


def test_faster_coco_eval_gives_pycocotools_numbers(coco_set):
    pytest.importorskip("faster_coco_eval")
    gt = load_coco(coco_set[1])
    perfect = _gt_results(gt)
    generator = torch.Generator().manual_seed(0)
    jittered = [
        {
            **r,
            "bbox": [v + float(d) for v, d in zip(r["bbox"], torch.randn(4, generator=generator) * 2)],
            "score": float(torch.rand(1, generator=generator)),
        }
        for r in perfect
        for _ in range(3)
    ]
    result_sets = [
        perfect,
        jittered,
        perfect + [{"image_id": 3, "category_id": 12, "bbox": [1.0, 1.0, 6.0, 6.0], "score": 2.0}],
        [],
    ]
    for results in result_sets:
        reference, _ = coco_bbox_metrics(gt, results, [1, 2, 3], "pycocotools")
        fast, summary = coco_bbox_metrics(gt, results, [1, 2, 3], "faster_coco_eval")
        assert list(fast) == list(reference)
        assert fast == pytest.approx(reference, abs=1e-4), results
        assert "Average Precision" in summary
    assert coco_backend("auto") == "faster_coco_eval"


def test_auto_backend_is_pycocotools_without_faster_coco_eval(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "faster_coco_eval" else real(name, *a)
    )
    assert coco_backend("auto") == "pycocotools"
    with pytest.raises(RecipeError, match=r'evaluation.backend = "faster_coco_eval" but the package is not installed'):
        Recipe.from_dict({"evaluation": {"backend": "faster_coco_eval"}, "runner": {"max_epochs": 1}})
