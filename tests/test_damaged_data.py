"""Damaged data of every type is one line naming the file (exit 2), or skipped and counted."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from accel_trainer.data.coco import CocoDetection
from accel_trainer.data.imagefolder import UNREADABLE, CheckedImageFolder
from accel_trainer.errors import RecipeError

from .helpers.datasets import make_coco
from .helpers.recipes import TINY_CLS, derive, write_recipe


def _truncated_jpeg(path: Path) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (90, 20, 200)).save(buffer, format="JPEG")
    path.write_bytes(buffer.getvalue()[:300])


def _image_folder(root: Path, classes=("a", "b"), per_class: int = 2) -> Path:
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (32, 32), (40 * i, 80, 120)).save(root / c / f"{i}.png")
    return root


def test_truncated_jpeg_in_an_image_folder_is_named_or_skipped(tmp_path):
    root = _image_folder(tmp_path / "train")
    _truncated_jpeg(root / "a" / "bad.jpg")
    ds = CheckedImageFolder(root, None)
    index = [p for p, _ in ds.samples].index(str(root / "a" / "bad.jpg"))
    with pytest.raises(RecipeError, match=r"cannot read image .*bad\.jpg.*skip_bad_images"):
        ds[index]
    assert CheckedImageFolder(root, None, skip_bad_images=True)[index] == (None, UNREADABLE)


def test_empty_class_folder_is_named(tmp_path):
    root = _image_folder(tmp_path / "train")
    (root / "c").mkdir()
    with pytest.raises(RecipeError, match=r"class folder 'c' holds no images"):
        CheckedImageFolder(root, None, key="data.train.root")
    assert CheckedImageFolder(root, None, skip_bad_images=True).classes == ["a", "b", "c"]


# An image-folder classifier on the runtime's optimizer and augmentation.
CLS_FOLDER = derive(
    TINY_CLS,
    model={"num_classes": 2},
    data={
        "type": "imagefolder",
        "batch_size": 5,
        "shapes": None,
        "augment": {"color_jitter": None, "scale": None, "label_smoothing": None},
    },
    optimizer=None,
    runner={"type": None, "max_epochs": 1},
    log_config={"interval": 1},
    accelerate=None,
)


def folder_data(root: Path, workers: int, skip: bool) -> dict:
    """CLS_FOLDER's data table for training and validating on the folder `root`."""
    return {"num_workers": workers, "skip_bad_images": skip, "train": {"root": root}, "val": {"root": root}}


def test_a_truncated_image_stops_a_run_with_one_line_or_is_counted_in_the_json_log(tmp_path):
    root = _image_folder(tmp_path / "train")
    _truncated_jpeg(root / "b" / "bad.jpg")
    recipe = write_recipe(tmp_path, CLS_FOLDER, data=folder_data(root, workers=1, skip=False))
    proc = subprocess.run([sys.executable, "-m", "accel_trainer", str(recipe)], capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert (
        last.startswith("accel-trainer: error: cannot read image ")
        and "bad.jpg" in last
        and "Traceback" not in proc.stderr
    )
    recipe = write_recipe(tmp_path, CLS_FOLDER, name="skip.toml", data=folder_data(root, workers=0, skip=True))
    proc = subprocess.run([sys.executable, "-m", "accel_trainer", str(recipe)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    records = [json.loads(line) for line in next((tmp_path / "work").glob("*.log.json")).read_text().splitlines()]
    (val,) = [r for r in records if r["mode"] == "val"]
    assert (val["num_samples"], val["skipped_val_images"], val["skipped_train_images"]) == (4, 1, 1)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d.pop("categories"), 'no "categories" list'),
        (
            lambda d: d["annotations"][0].update(category_id=99),
            "annotation id 1 category_id 99 is not among the categories [3, 7, 12]",
        ),
        (lambda d: d["annotations"][4].pop("bbox"), "annotation id 5 has no bbox"),
        (
            lambda d: d["annotations"][4].update(bbox=[1, 2, -3, 4]),
            "annotation id 5 bbox [1, 2, -3, 4] has a negative width",
        ),
    ],
)
def test_broken_coco_annotations_are_named_before_training(tmp_path, change, message):
    images, ann_file = make_coco(tmp_path)
    data = json.loads(ann_file.read_text())
    change(data)
    ann_file.write_text(json.dumps(data))
    with pytest.raises(RecipeError) as info:
        CocoDetection(images, ann_file)
    assert str(info.value).startswith(str(ann_file)) and message in str(info.value)


def test_a_broken_annotation_skips_its_image_with_skip_bad_images(tmp_path):
    images, ann_file = make_coco(tmp_path)
    data = json.loads(ann_file.read_text())
    data["annotations"][4]["category_id"] = 99  # image 3's only box
    ann_file.write_text(json.dumps(data))
    ds = CocoDetection(images, ann_file, skip_bad_images=True)
    assert ds.ids == [1, 2] and ds.num_skipped == 1
