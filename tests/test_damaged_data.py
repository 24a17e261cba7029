"""Damaged data of every type is one line naming the file (exit 2), or skipped and counted."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from accel_trainer.data.coco import CocoDetection
from accel_trainer.data.imagefolder import UNREADABLE, CheckedImageFolder
from accel_trainer.data.images import open_image
from accel_trainer.data.voc import read_annotation
from accel_trainer.errors import RecipeError

from .helpers.datasets import make_coco, write_png_header, write_voc
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


def test_a_fifo_named_like_an_image_is_named_or_skipped_up_front(tmp_path):
    root = _image_folder(tmp_path / "train")
    os.mkfifo(root / "a" / "bad.png")  # reading it would block for ever
    with pytest.raises(RecipeError, match=r"data.train.root = .*: .*bad\.png is not a regular file.*skip_bad_images"):
        CheckedImageFolder(root, None, key="data.train.root")
    ds = CheckedImageFolder(root, None, skip_bad_images=True)
    assert ds.num_skipped == 1 and len(ds) == 4 and str(root / "a" / "bad.png") not in [p for p, _ in ds.samples]


def test_only_regular_files_are_opened_as_images(tmp_path):
    os.mkfifo(tmp_path / "pipe.png")
    for path in (tmp_path / "pipe.png", Path("/dev/null"), tmp_path):
        with pytest.raises(OSError, match="not a regular file"), open_image(path):
            pass


def test_an_image_over_the_pixel_limit_is_named_or_skipped(tmp_path):
    root = _image_folder(tmp_path / "train")
    write_png_header(root / "a" / "huge.png")
    ds = CheckedImageFolder(root, None)
    index = [p for p, _ in ds.samples].index(str(root / "a" / "huge.png"))
    with pytest.raises(RecipeError, match=r"cannot read image .*huge\.png: .*MAX_IMAGE_PIXELS = \d+.*skip_bad_images"):
        ds[index]
    assert CheckedImageFolder(root, None, skip_bad_images=True)[index] == (None, UNREADABLE)


def test_a_detection_image_over_the_pixel_limit_is_named_or_skipped(tmp_path):
    images, ann_file = make_coco(tmp_path)
    write_png_header(images / "3.png")
    with pytest.raises(RecipeError, match=r"cannot read image .*3\.png: .*MAX_IMAGE_PIXELS"):
        CocoDetection(images, ann_file)[2]
    ds = CocoDetection(images, ann_file, skip_bad_images=True)
    assert ds[2] == (None, {"image_id": 3}) and ds.num_unreadable == 1
    voc = write_voc(tmp_path / "VOC2007", {"a": (20, 20, [])})
    write_png_header(voc / "JPEGImages" / "a.jpg")
    xml = voc / "Annotations" / "a.xml"
    xml.write_text(xml.read_text().replace("<size><width>20</width><height>20</height><depth>3</depth></size>", ""))
    with pytest.raises(RecipeError, match=r"no <size>, and the image cannot be read: .*a\.jpg: .*MAX_IMAGE_PIXELS"):
        read_annotation(xml, voc / "JPEGImages" / "a.jpg", ["thing"])


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


def test_a_huge_image_stops_a_run_with_one_line_and_is_counted_with_a_fifo_when_skipping(tmp_path):
    root = _image_folder(tmp_path / "train")
    write_png_header(root / "b" / "huge.png")
    recipe = write_recipe(tmp_path, CLS_FOLDER, data=folder_data(root, workers=1, skip=False))
    proc = subprocess.run([sys.executable, "-m", "accel_trainer", str(recipe)], capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert "huge.png" in last and "MAX_IMAGE_PIXELS" in last and "Traceback" not in proc.stderr
    os.mkfifo(root / "a" / "pipe.png")
    recipe = write_recipe(tmp_path, CLS_FOLDER, name="skip.toml", data=folder_data(root, workers=0, skip=True))
    proc = subprocess.run([sys.executable, "-m", "accel_trainer", str(recipe)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    records = [json.loads(line) for line in next((tmp_path / "work").glob("*.log.json")).read_text().splitlines()]
    (val,) = [r for r in records if r["mode"] == "val"]
    assert (val["num_samples"], val["skipped_val_images"], val["skipped_train_images"]) == (4, 2, 2)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d.pop("categories"), 'no "categories" list'),
        (lambda d: d["images"][0].update(id=[1]), "images[0] = {'id': [1], "),
        (
            lambda d: [d["images"][0].update(id="1")] + [a.update(image_id="1") for a in d["annotations"][:4]],
            "images[0] = {'id': '1', 'file_name': '1.png', 'width': 40, 'height': 30} needs an integer id",
        ),
        (lambda d: d["annotations"][1].update(image_id={}), "annotation id 2 image_id {} is not an integer"),
        (lambda d: d["annotations"][1].update(category_id=[3]), "annotation id 2 category_id [3] is not among"),
        (lambda d: d["annotations"][1].update(id="2"), "annotations[1] id '2' is not an integer"),
        (
            lambda d: d["annotations"][4].update(bbox=[50, 1, 6, 6]),
            "annotation id 5 bbox [50, 1, 6, 6] lies entirely outside its 40 x 30 image",
        ),
        (lambda d: d["images"][1].update(width=0), "images[1] width / height 0 / 30 are not positive numbers"),
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


@pytest.mark.parametrize("change", [{"category_id": 99}, {"bbox": [1, -20, 6, 6]}, {"image_id": 3, "id": None}])
def test_a_broken_annotation_skips_its_image_with_skip_bad_images(tmp_path, change):
    images, ann_file = make_coco(tmp_path)
    data = json.loads(ann_file.read_text())
    data["annotations"][4].update(change)  # image 3's only box
    ann_file.write_text(json.dumps(data))
    ds = CocoDetection(images, ann_file, skip_bad_images=True)
    assert ds.ids == [1, 2] and ds.num_skipped == 1


def test_coco_json_nested_too_deeply_is_one_line(tmp_path):
    images, ann_file = make_coco(tmp_path)
    ann_file.write_text("[" * 100_000)
    with pytest.raises(RecipeError, match=r"instances\.json: nested too deeply to read"):
        CocoDetection(images, ann_file)
