"""VOC data: the pixel convention, difficult boxes, damaged files by file and line, VOC AP against a
hand-computed case, and the same bbox_mAP from the same boxes given as COCO JSON or VOC XML."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from accel_trainer.data.coco import coco_bbox_metrics, index_coco, load_coco
from accel_trainer.data.voc import VocDetection, average_precision, voc_ap_metrics
from accel_trainer.errors import RecipeError

from .helpers.datasets import write_voc
from .helpers.recipes import TINY_DET, derive, write_recipe

CLASSES = ["cat", "dog"]


def test_voc_boxes_read_in_pixel_edges_and_difficult_boxes_leave_training(tmp_path):
    # COCO [4, 5, 10, 8] written as VOC: xmin = x + 1 = 5, ymin = 6, xmax = x + w = 14, ymax = 13.
    root = write_voc(tmp_path / "VOC2007", {"a": (40, 30, [("dog", 5, 6, 14, 13, 0), ("cat", 1, 1, 40, 30, 1)])})
    ds = VocDetection([(root, "trainval")], CLASSES)
    image, target = ds[0]
    assert (
        image.size == (40, 30)
        and target["boxes"].tolist() == [[4.0, 5.0, 14.0, 13.0]]
        and target["labels"].tolist() == [1]
    )
    anns = ds.coco.dataset["annotations"]
    assert [(a["bbox"], a["iscrowd"]) for a in anns] == [([4.0, 5.0, 10.0, 8.0], 0), ([0.0, 0.0, 40.0, 30.0], 1)]


def test_several_roots_concatenate(tmp_path):
    a = write_voc(tmp_path / "VOC2007", {"x": (20, 20, [("cat", 2, 2, 9, 9, 0)])})
    b = write_voc(tmp_path / "VOC2012", {"y": (20, 20, [("dog", 2, 2, 9, 9, 0)]), "z": (20, 20, [])})
    ds = VocDetection([(a, "trainval"), (b, "trainval")], CLASSES)
    assert len(ds) == 3 and [ds[i][1]["labels"].tolist() for i in range(3)] == [[0], [1], []]


@pytest.mark.parametrize(
    "xml, message",
    [
        ("<annotation>\n<size><width>20</width>\n</annotation>", "a.xml: line 3: malformed XML (mismatched tag)"),
        (
            '<?xml version="1.0"?>\n<!DOCTYPE a [<!ENTITY x "y">]>\n<annotation/>',
            "a.xml: line 2: DOCTYPE and entity declarations are refused",
        ),
        (
            "<annotation><size><width>20</width><height>20</height></size>\n<object>\n<name>dgo</name><bndbox><xmin>1</xmin>"
            "<ymin>1</ymin><xmax>5</xmax><ymax>5</ymax></bndbox></object></annotation>",
            "a.xml: line 3: object name 'dgo' is not in data.classes (did you mean \"dog\"?)",
        ),
        (
            "<annotation><size><width>20</width><height>20</height></size>\n<object><name>dog</name>\n<bndbox><xmin>0</xmin>"
            "<ymin>1</ymin><xmax>25</xmax><ymax>5</ymax></bndbox></object></annotation>",
            "a.xml: line 3: box xmin=0 ymin=1 xmax=25 ymax=5 is not inside the 20 x 20 image",
        ),
    ],
)
def test_damaged_voc_files_are_named_with_their_line_or_skipped(tmp_path, xml, message):
    root = write_voc(tmp_path / "VOC2012", {"a": (20, 20, []), "b": (20, 20, [("cat", 2, 2, 9, 9, 0)])})
    (root / "Annotations" / "a.xml").write_text(xml)
    with pytest.raises(RecipeError) as info:
        VocDetection([(root, "trainval")], CLASSES)
    assert message in str(info.value) and str(root / "Annotations" / "a.xml") in str(info.value)
    ds = VocDetection([(root, "trainval")], CLASSES, skip_bad_images=True)
    assert len(ds) == 1 and ds.num_skipped == 1


def test_voc_ap_matches_a_hand_computed_case():
    # One class, two true boxes and a difficult one. Ranked: hit, false positive, hit on the
    # difficult box (ignored), hit: recall 0.5, 0.5, 1; precision 1, 1/2, 2/3.
    gt = index_coco(
        {
            "images": [{"id": 1}],
            "categories": [{"id": 0, "name": "cat"}],
            "annotations": [
                {"id": 1, "image_id": 1, "category_id": 0, "bbox": [0, 0, 10, 10], "area": 100, "iscrowd": 0},
                {"id": 2, "image_id": 1, "category_id": 0, "bbox": [20, 20, 10, 10], "area": 100, "iscrowd": 0},
                {"id": 3, "image_id": 1, "category_id": 0, "bbox": [40, 0, 10, 10], "area": 100, "iscrowd": 1},
            ],
        }
    )
    dets = [
        {"image_id": 1, "category_id": 0, "bbox": b, "score": s}
        for b, s in (([0, 0, 10, 10], 0.9), ([60, 60, 5, 5], 0.8), ([40, 0, 10, 10], 0.7), ([21, 21, 10, 10], 0.6))
    ]
    area, _ = voc_ap_metrics(gt, dets, [1], ["cat"], [0], 0.5, "area")
    assert area["mAP"] == pytest.approx(0.5 * 1 + 0.5 * 2 / 3) and area["AP_cat"] == area["mAP"]
    points, _ = voc_ap_metrics(gt, dets, [1], ["cat"], [0], 0.5, "11points")
    assert points["mAP"] == pytest.approx((6 * 1 + 5 * 2 / 3) / 11)
    # IoU of [21, 21, 31, 31] with [20, 20, 30, 30] is 81 / 119 = 0.68: a miss at 0.7.
    strict, _ = voc_ap_metrics(gt, dets, [1], ["cat"], [0], 0.7, "area")
    assert strict["mAP"] == pytest.approx(0.5)
    assert average_precision([], [], "area") == 0.0


def _parity_sets(tmp_path: Path) -> tuple[Path, Path, Path]:
    """The same 4 images and boxes as COCO JSON (+ images folder) and as a VOC folder."""
    boxes = {
        "i0": [("cat", 4, 5, 20, 18)],
        "i1": [("dog", 10, 2, 30, 40), ("cat", 1, 1, 12, 12)],
        "i2": [("dog", 20, 20, 24, 24)],
        "i3": [("cat", 8, 8, 40, 30), ("dog", 2, 30, 20, 17)],
    }
    voc = write_voc(
        tmp_path / "VOC2012",
        {n: (48, 48, [(c, x + 1, y + 1, x + w, y + h, 0) for c, x, y, w, h in b]) for n, b in boxes.items()},
        split="test",
    )
    (voc / "ImageSets" / "Main" / "trainval.txt").write_text((voc / "ImageSets" / "Main" / "test.txt").read_text())
    coco = {
        "images": [{"id": i + 1, "file_name": f"{n}.jpg", "width": 48, "height": 48} for i, n in enumerate(boxes)],
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
        "annotations": [
            {
                "id": 10 * i + k + 1,
                "image_id": i + 1,
                "category_id": CLASSES.index(c) + 1,
                "bbox": [x, y, w, h],
                "area": w * h,
                "iscrowd": 0,
            }
            for i, b in enumerate(boxes.values())
            for k, (c, x, y, w, h) in enumerate(b)
        ],
    }
    ann = tmp_path / "coco.json"
    ann.write_text(json.dumps(coco))
    return voc, voc / "JPEGImages", ann


def test_the_same_boxes_as_coco_or_voc_give_the_same_cocoeval(tmp_path):
    voc, _, ann = _parity_sets(tmp_path)
    gt_coco, gt_voc = load_coco(ann), VocDetection([(voc, "test")], CLASSES).coco
    shifted = [
        {
            "image_id": a["image_id"],
            "category_id": a["category_id"],
            "score": 0.9 - 0.01 * a["id"],
            "bbox": [a["bbox"][0] + 1.5, a["bbox"][1], a["bbox"][2], a["bbox"][3] - 2],
        }
        for a in gt_coco.dataset["annotations"]
    ]
    as_voc = [{**r, "image_id": r["image_id"] - 1, "category_id": r["category_id"] - 1} for r in shifted]
    coco_metrics = coco_bbox_metrics(gt_coco, shifted, [1, 2, 3, 4])[0]
    assert 0.1 < coco_metrics["bbox_mAP"] < 0.9
    assert coco_bbox_metrics(gt_voc, as_voc, [0, 1, 2, 3])[0] == coco_metrics


# A detector on 48 px images with the default head, optimizer and logging; each test adds its data table.
PARITY = derive(
    TINY_DET,
    model={"head": None, "num_classes": 2, "min_size": 48, "max_size": 48},
    data={"type": None, "shapes": None, "augment": None},
    optimizer={"momentum": None},
    runner={"type": None},
    log_config=None,
    evaluation={"metric": "bbox"},
)


def test_eval_only_of_one_checkpoint_scores_coco_and_voc_data_the_same(tmp_path):
    voc, images, ann = _parity_sets(tmp_path)
    coco_data = {"type": "coco", "train": {"root": images, "ann_file": ann}, "val": {"root": images, "ann_file": ann}}
    voc_data = {"type": "voc", "classes": ["cat", "dog"], "train": {"root": voc}, "val": {"root": voc}}
    coco_recipe = write_recipe(tmp_path, PARITY, name="coco.toml", data=coco_data)
    voc_recipe = write_recipe(tmp_path, PARITY, name="voc.toml", data=voc_data, work_dir=tmp_path / "voc_work")
    run = [sys.executable, "-m", "accel_trainer"]
    proc = subprocess.run([*run, str(coco_recipe)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    checkpoint = tmp_path / "work" / "checkpoints" / "epoch_1"
    results = {}
    for name, recipe in (("coco", coco_recipe), ("voc", voc_recipe)):
        proc = subprocess.run(
            [*run, str(recipe), "--eval-only", "--checkpoint", str(checkpoint), "--work-dir", str(tmp_path / name)],
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        results[name] = json.loads((tmp_path / name / "eval" / "metrics.json").read_text())
    assert results["coco"]["num_samples"] == results["voc"]["num_samples"] == 4
    assert results["coco"]["bbox_mAP"] == pytest.approx(results["voc"]["bbox_mAP"], abs=1e-4)
    assert results["coco"]["bbox_mAP_50"] == pytest.approx(results["voc"]["bbox_mAP_50"], abs=1e-4)
    proc = subprocess.run(
        [
            *run,
            str(voc_recipe),
            "--eval-only",
            "--checkpoint",
            str(checkpoint),
            "--work-dir",
            str(tmp_path / "ap"),
            "--set",
            'evaluation.metric="mAP"',
            "--set",
            'evaluation.eval_mode="11points"',
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ap = json.loads((tmp_path / "ap" / "eval" / "metrics.json").read_text())
    assert {"mAP", "AP_cat", "AP_dog"} <= set(ap) and ap["mAP"] == pytest.approx((ap["AP_cat"] + ap["AP_dog"]) / 2)
