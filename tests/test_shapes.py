"""The built-in shapes data: deterministic, loadable by the real loaders, honest boxes, atomic cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO
from torchvision.datasets import ImageFolder

from accel_trainer.data import shapes
from accel_trainer.data.shapes import (
    CLASSES,
    ShapesSpec,
    default_cache_dir,
    ensure_shapes_classification,
    ensure_shapes_detection,
)

SMALL = ShapesSpec(num_train=12, num_val=8, image_size=32, seed=3, max_objects=3)
DET = ShapesSpec(num_train=40, num_val=16, image_size=48, seed=5, max_objects=3)
# Residual RGB distance from the fitted background: pure noise stays well below it, shape pixels
# (>= MIN_CONTRAST from the background colour) well above it.
FOREGROUND = 80.0


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def leftovers(cache: Path) -> list[str]:
    return [p.name for p in cache.iterdir() if ".tmp" in p.name]


def test_generation_is_byte_identical(tmp_path):
    a_train, _ = ensure_shapes_classification(SMALL, tmp_path / "a")
    b_train, _ = ensure_shapes_classification(SMALL, tmp_path / "b")
    assert a_train.parent.name == b_train.parent.name
    a, b = tree_bytes(a_train.parent), tree_bytes(b_train.parent)
    assert len(a) == SMALL.num_train + SMALL.num_val + 1 and a == b

    a_det = ensure_shapes_detection(SMALL, tmp_path / "a")
    b_det = ensure_shapes_detection(SMALL, tmp_path / "b")
    assert tree_bytes(a_det["train_images"].parent) == tree_bytes(b_det["train_images"].parent)


def test_specs_do_not_collide(tmp_path):
    base, _ = ensure_shapes_classification(SMALL, tmp_path)
    other, _ = ensure_shapes_classification(replace(SMALL, seed=4), tmp_path)
    assert base.parent != other.parent
    assert tree_bytes(base) != tree_bytes(other)
    # max_objects only shapes detection data, so it must not fork the classification cache.
    more = replace(SMALL, max_objects=5)
    assert ensure_shapes_classification(more, tmp_path)[0] == base
    assert ensure_shapes_detection(more, tmp_path)["train_ann"] != ensure_shapes_detection(SMALL, tmp_path)["train_ann"]


def test_imagefolder_loads_classes_and_counts(tmp_path):
    train_root, val_root = ensure_shapes_classification(SMALL, tmp_path)
    train, val = ImageFolder(str(train_root)), ImageFolder(str(val_root))
    assert train.classes == val.classes == sorted(CLASSES)
    assert len(train) == SMALL.num_train and len(val) == SMALL.num_val
    counts = np.bincount(train.targets, minlength=len(CLASSES))
    assert counts.max() - counts.min() <= 1
    image, _ = train[0]
    assert image.mode == "RGB" and image.size == (SMALL.image_size, SMALL.image_size)


def test_coco_json_with_non_contiguous_categories(tmp_path):
    paths = ensure_shapes_detection(SMALL, tmp_path)
    assert set(paths) == {"train_images", "train_ann", "val_images", "val_ann"}
    for split, count in (("train", SMALL.num_train), ("val", SMALL.num_val)):
        coco = COCO(str(paths[f"{split}_ann"]))
        cat_ids = coco.getCatIds()
        assert cat_ids == [2 * i + 1 for i in range(len(CLASSES))]
        assert [c["name"] for c in coco.loadCats(cat_ids)] == list(CLASSES)
        assert len(coco.getImgIds()) == count
        for info in coco.loadImgs(coco.getImgIds()):
            with Image.open(paths[f"{split}_images"] / info["file_name"]) as image:
                assert image.format == "JPEG" and image.size == (info["width"], info["height"])
        for ann in coco.loadAnns(coco.getAnnIds()):
            x, y, w, h = ann["bbox"]
            assert ann["iscrowd"] == 0 and ann["category_id"] in cat_ids
            assert x >= 0 and y >= 0 and w > 0 and h > 0
            assert x + w <= SMALL.image_size and y + h <= SMALL.image_size
            assert 0 < ann["area"] <= w * h
        per_image = [len(coco.getAnnIds(imgIds=i)) for i in coco.getImgIds()]
        assert 0 in per_image and max(per_image) <= SMALL.max_objects


def residual(image: np.ndarray, boxes: list[list[float]]) -> np.ndarray:
    """RGB distance of each pixel from a linear background fitted to the pixels outside all boxes."""
    height, width = image.shape[:2]
    outside = np.ones((height, width), dtype=bool)
    for x, y, w, h in boxes:
        outside[int(y) : int(y + h), int(x) : int(x + w)] = False
    yy, xx = np.mgrid[:height, :width]
    design = np.stack([np.ones(height * width), xx.ravel(), yy.ravel()], axis=1)
    pixels = image.reshape(-1, 3).astype(float)
    coef, *_ = np.linalg.lstsq(design[outside.ravel()], pixels[outside.ravel()], rcond=None)
    return np.linalg.norm(pixels - design @ coef, axis=1).reshape(height, width)


@pytest.mark.parametrize("split", ["train", "val"])
def test_boxes_are_tight_on_the_decoded_jpegs(tmp_path, split):
    paths = ensure_shapes_detection(DET, tmp_path)
    coco = COCO(str(paths[f"{split}_ann"]))
    empty = 0
    for info in coco.loadImgs(coco.getImgIds()):
        boxes = [a["bbox"] for a in coco.loadAnns(coco.getAnnIds(imgIds=info["id"]))]
        empty += not boxes
        dist = residual(np.asarray(Image.open(paths[f"{split}_images"] / info["file_name"])), boxes)
        covered = np.zeros(dist.shape, dtype=bool)
        for x, y, w, h in boxes:
            x, y, w, h = int(x), int(y), int(w), int(h)
            covered[y : y + h, x : x + w] = True
            inner = dist[y : y + h, x : x + w]
            # Every side of a tight box touches the shape.
            for side in (inner[0], inner[-1], inner[:, 0], inner[:, -1]):
                assert side.max() > FOREGROUND, (info["file_name"], (x, y, w, h))
        # Nothing shape-like outside the boxes: no box is too small and no object is unannotated.
        assert dist[~covered].max() < FOREGROUND, info["file_name"]
    assert empty >= 1


def test_existing_set_is_reused_without_regeneration(tmp_path, monkeypatch):
    train_root, val_root = ensure_shapes_classification(SMALL, tmp_path)
    files = sorted(train_root.parent.rglob("*"))
    stamps = [p.stat().st_mtime_ns for p in files]

    def fail(*_args):
        raise AssertionError("regenerated an existing set")

    monkeypatch.setattr(shapes, "_write_classification", fail)
    assert ensure_shapes_classification(SMALL, tmp_path) == (train_root, val_root)
    assert [p.stat().st_mtime_ns for p in files] == stamps
    assert leftovers(tmp_path) == []


def test_race_loser_discards_its_copy(tmp_path, monkeypatch):
    """Another process finishes first while this one is still writing: keep the winner's folder."""
    real = shapes._write_classification
    final = shapes._set_dir("classification", SMALL, tmp_path)

    def write_after_winner(spec, root):
        winner = tmp_path / "winner-staging"
        winner.mkdir()
        real(spec, winner)
        (winner / "winner").touch()
        os.rename(winner, final)
        real(spec, root)

    monkeypatch.setattr(shapes, "_write_classification", write_after_winner)
    train_root, _ = ensure_shapes_classification(SMALL, tmp_path)
    assert train_root.parent == final and (final / "winner").exists()
    assert leftovers(tmp_path) == []
    assert len(ImageFolder(str(train_root))) == SMALL.num_train


def test_failed_generation_leaves_nothing(tmp_path, monkeypatch):
    def boom(spec, root):
        (root / "partial").touch()
        raise RuntimeError("disk full")

    monkeypatch.setattr(shapes, "_write_detection", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        ensure_shapes_detection(SMALL, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("ACCEL_TRAINER_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("ACCEL_TRAINER_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "accel_trainer"


def test_invalid_spec_is_rejected():
    with pytest.raises(ValueError, match="image_size"):
        ShapesSpec(image_size=8)
    with pytest.raises(ValueError, match="num_val"):
        ShapesSpec(num_val=0)


def test_spec_file_records_what_was_generated(tmp_path):
    train_root, _ = ensure_shapes_classification(SMALL, tmp_path)
    recorded = json.loads((train_root.parent / "spec.json").read_text())
    assert recorded["seed"] == SMALL.seed and recorded["classes"] == list(CLASSES)


def test_folders_of_killed_generations_are_removed_by_the_next(tmp_path):
    final = shapes._set_dir("classification", SMALL, tmp_path)
    done = subprocess.Popen([sys.executable, "-c", ""])
    done.wait()  # a pid that is gone: the writer was killed
    host = shapes._host_hash()
    stale = [f".{final.name}.tmp-{done.pid}-{host}-abcd_123", ".shapes-det-v1-0123456789ab.tmp-old_name"]
    kept = [
        f".{final.name}.tmp-{os.getpid()}-{host}-writing1",  # a live writer
        ".shapes-det-v1-0123456789ab.tmp-new_name",  # an older name, recent
        f".{final.name}.tmp-{done.pid}-0000beef-otherhst",  # another host: only age tells
        ".mine.tmp-old_name",  # not a shapes name
    ]
    for name in stale + kept:
        (tmp_path / name).mkdir()
        (tmp_path / name / "0.png").write_bytes(b"x")
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep").touch()
    link = f".{final.name}.tmp-{done.pid}-{host}-linkname"
    (tmp_path / link).symlink_to(victim)
    two_days_ago = time.time() - 2 * 24 * 3600
    for name in (stale[1], kept[3], link):
        os.utime(tmp_path / name, (two_days_ago, two_days_ago), follow_symlinks=False)
    ensure_shapes_classification(SMALL, tmp_path)
    assert sorted(leftovers(tmp_path)) == sorted([*kept, link]) and (victim / "keep").exists()
