"""`accel-trainer predict` and `Predictor`: the same answers as `--eval-only` for the same checkpoint,
class names from the checkpoint, every kind of input, unreadable images skipped, and two processes."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image
from torchvision.transforms.v2.functional import pil_to_tensor

from accel_trainer import Trainer, load_recipe
from accel_trainer.cli import main
from accel_trainer.predict import Predictor

from .helpers.datasets import write_png_header
from .helpers.launch import launch
from .helpers.recipes import TINY_DET, write_recipe


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def cls_run(tmp_path_factory) -> dict:
    """A classifier trained for one epoch, its checkpoint and its val folder."""
    tmp = tmp_path_factory.mktemp("cls")
    recipe = write_recipe(tmp)
    assert main([str(recipe), "--set", "runner.max_epochs=1", 'workflow=[["train", 1]]']) == 0
    trainer_recipe = load_recipe(recipe)
    from accel_trainer.tasks import build_task

    _, val = build_task(trainer_recipe).build_datasets()
    return {"recipe": recipe, "ckpt": tmp / "work" / "checkpoints" / "epoch_1", "val_root": Path(val.root), "tmp": tmp}


@pytest.fixture(scope="module")
def det_run(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("det")
    recipe = write_recipe(tmp, TINY_DET, name="det.toml")
    assert main([str(recipe), "--set", 'workflow=[["train", 1]]']) == 0
    return {"recipe": recipe, "ckpt": tmp / "work" / "checkpoints" / "epoch_1", "tmp": tmp}


def test_classification_top1_equals_eval_only(cls_run):
    ckpt, tmp = cls_run["ckpt"], cls_run["tmp"]
    assert (
        main([str(cls_run["recipe"]), "--eval-only", "--checkpoint", str(ckpt), "--work-dir", str(tmp / "eval")]) == 0
    )
    metrics = json.loads((tmp / "eval" / "eval" / "metrics.json").read_text())
    out = tmp / "pred.jsonl"
    assert main(["predict", str(ckpt), str(cls_run["val_root"]), "--out", str(out), "--topk", "9"]) == 0
    records = read_jsonl(out)
    assert len(records) == metrics["num_samples"] == 21
    hits = [r["topk"][0]["label"] == Path(r["file"]).parent.name for r in records]
    assert 100.0 * sum(hits) / len(hits) == pytest.approx(metrics["top1"], abs=1e-6)
    first = records[0]["topk"]
    assert len(first) == 4  # capped at num_classes
    assert {e["label"] for e in first} == {p.name for p in cls_run["val_root"].iterdir()}  # names from the checkpoint
    assert sum(e["score"] for e in first) == pytest.approx(1.0, abs=1e-3)  # scores rounded to 1e-4
    assert [e["score"] for e in first] == sorted((e["score"] for e in first), reverse=True)


def test_paths_pil_images_and_tensors_give_the_same_records(cls_run):
    predictor = Predictor.from_checkpoint(cls_run["ckpt"])
    files = sorted(cls_run["val_root"].rglob("*.png"))[:3]
    pils = [Image.open(f).convert("RGB") for f in files]
    by_path = predictor.predict(files)
    by_pil = predictor.predict(pils)
    by_tensor = predictor.predict([pil_to_tensor(p) for p in pils])
    for a, b, c in zip(by_path, by_pil, by_tensor):
        assert a["topk"] == b["topk"] == c["topk"]
    assert by_path[0]["file"] == str(files[0]) and by_tensor[0]["file"] is None


def test_trainer_predict_uses_the_model_in_memory(tiny_recipe):
    trainer = Trainer(load_recipe(tiny_recipe, {"runner.max_epochs": 1}))
    files = sorted(Path(trainer.val_dataset.root).rglob("*.png"))[:2]
    records = trainer.predict(files, topk=2)
    assert [len(r["topk"]) for r in records] == [2, 2]
    assert records[0]["topk"][0]["label"] in trainer.val_dataset.classes
    assert trainer.unwrapped_model.training  # left as it was


def test_unreadable_images_are_skipped_and_counted_order_kept_drawings_written(cls_run, tmp_path, capsys):
    files = sorted(cls_run["val_root"].rglob("*.png"))[:3]
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    inputs = [str(files[2]), str(bad), str(files[0]), str(files[1].parent / "*.png")]
    out, drawn = tmp_path / "p.jsonl", tmp_path / "drawn"
    assert (
        main(["predict", str(cls_run["ckpt"]), *inputs, "--out", str(out), "--draw", str(drawn), "--batch-size", "2"])
        == 0
    )
    records = read_jsonl(out)
    globbed = sorted(files[1].parent.glob("*.png"))
    assert [r["file"] for r in records] == [str(files[2]), str(files[0]), *map(str, globbed)]
    captured = capsys.readouterr()
    assert f"skipping unreadable image {bad}" in captured.err and "skipped 1 unreadable images" in captured.out
    assert len(list(drawn.rglob("*.png"))) == len(records)  # a repeated file is drawn under a second name


def test_images_that_are_not_regular_files_or_too_large_are_named_and_skipped(cls_run, tmp_path, capsys):
    folder = tmp_path / "inputs"
    folder.mkdir()
    shutil.copy(sorted(cls_run["val_root"].rglob("*.png"))[0], folder / "a.png")
    write_png_header(folder / "huge.png")
    os.mkfifo(folder / "pipe.png")  # reading it would block for ever
    out = tmp_path / "p.jsonl"
    assert main(["predict", str(cls_run["ckpt"]), str(folder), "--out", str(out)]) == 0
    assert [r["file"] for r in read_jsonl(out)] == [str(folder / "a.png")]
    captured = capsys.readouterr()
    assert f"skipping unreadable image {folder / 'huge.png'}: " in captured.err and "MAX_IMAGE_PIXELS" in captured.err
    assert f"skipping unreadable image {folder / 'pipe.png'}: not a regular file" in captured.err
    assert "skipped 2 unreadable images" in captured.out


@pytest.mark.parametrize(
    "where, message",
    [(lambda tmp: tmp, "is a folder"), (lambda tmp: tmp / "a.png" / "p.jsonl", "a.png is not a folder")],
)
def test_an_out_path_that_cannot_be_written_is_refused_before_the_model_loads(
    tmp_path, capsys, monkeypatch, where, message
):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")

    def load(*_args, **_kwargs):
        raise AssertionError("the model was loaded before --out was checked")

    monkeypatch.setattr(Predictor, "from_checkpoint", load)
    out = where(tmp_path)
    assert main(["predict", str(tmp_path / "ckpt"), str(tmp_path / "a.png"), "--out", str(out)]) == 2
    assert f"--out {out}: " in (err := capsys.readouterr().err) and message in err


def test_missing_input_exits_2(cls_run, tmp_path, capsys):
    assert main(["predict", str(cls_run["ckpt"]), str(tmp_path / "nope.jpg"), "--out", str(tmp_path / "p.jsonl")]) == 2
    assert "nope.jpg" in capsys.readouterr().err


def test_detection_boxes_equal_eval_only_predictions(det_run):
    ckpt, tmp = det_run["ckpt"], det_run["tmp"]
    assert (
        main([str(det_run["recipe"]), "--eval-only", "--checkpoint", str(ckpt), "--work-dir", str(tmp / "eval")]) == 0
    )
    expected = json.loads((tmp / "eval" / "eval" / "predictions.bbox.json").read_text())
    task_recipe = load_recipe(det_run["recipe"])
    from accel_trainer.tasks import build_task

    paths = build_task(task_recipe).data_paths()
    ann = json.loads(paths["val_ann"].read_text())
    id_of = {img["file_name"]: img["id"] for img in ann["images"]}
    names = {c["id"]: c["name"] for c in ann["categories"]}
    out = tmp / "det.jsonl"
    assert main(["predict", str(ckpt), str(paths["val_images"]), "--out", str(out), "--draw", str(tmp / "drawn")]) == 0
    records = read_jsonl(out)
    assert len(records) == len(id_of) and len(list((tmp / "drawn").glob("*.png"))) == len(id_of)
    got = []
    for r in records:
        image = Image.open(r["file"])
        assert (r["width"], r["height"]) == image.size
        assert r["labels"] == [names[c] for c in r["category_ids"]]
        for (x1, y1, x2, y2), cat, score in zip(r["boxes"], r["category_ids"], r["scores"]):
            got.append((id_of[Path(r["file"]).name], cat, [x1, y1, x2 - x1, y2 - y1], score))
    want = [(d["image_id"], d["category_id"], d["bbox"], d["score"]) for d in expected]
    assert len(got) == len(want) > 0
    key = lambda item: (item[0], -item[3])  # noqa: E731
    for (gi, gc, gb, gs), (wi, wc, wb, ws) in zip(sorted(got, key=key), sorted(want, key=key)):
        assert (gi, gc) == (wi, wc)
        assert gs == pytest.approx(ws, abs=1e-4)  # predict rounds scores to 1e-4, boxes to 0.01 px
        assert gb == pytest.approx(wb, abs=0.011)


@pytest.mark.multiprocess
def test_two_processes_predict_each_image_once_in_input_order(det_run, tmp_path):
    from accel_trainer.tasks import build_task

    paths = build_task(load_recipe(det_run["recipe"])).data_paths()
    files = sorted(paths["val_images"].glob("*"))[::-1]  # an order unlike the split's
    out = tmp_path / "two.jsonl"
    proc = launch(
        Path("predict"), str(det_run["ckpt"]), *map(str, files), "--out", str(out), "--batch-size", "2", port=29561
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "(2 processes)" in proc.stdout
    records = read_jsonl(out)
    assert [r["file"] for r in records] == list(map(str, files))
    single = tmp_path / "one.jsonl"
    assert main(["predict", str(det_run["ckpt"]), *map(str, files), "--out", str(single)]) == 0
    for a, b in zip(records, read_jsonl(single)):
        assert torch.allclose(
            torch.tensor(a["boxes"]).reshape(-1, 4), torch.tensor(b["boxes"]).reshape(-1, 4), atol=0.011
        )


def test_a_checkpoint_of_a_model_of_ones_own_says_how_to_load_it(tmp_path, capsys):
    from .helpers.checkpoints import custom_model_checkpoint, tiny_classifier

    ckpt = custom_model_checkpoint(tmp_path)
    image = tmp_path / "a.png"
    Image.new("RGB", (32, 32), "red").save(image)
    assert main(["predict", str(ckpt), str(image), "--out", str(tmp_path / "p.jsonl")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{ckpt}: the weights do not fit the model" in err
    assert "86 missing: conv1.0.weight" in err and "9 unexpected: " in err and "model=your_model" in err
    records = Predictor.from_checkpoint(ckpt, model=tiny_classifier()).predict([image])
    assert len(records[0]["topk"]) == 4


def test_drawings_keep_the_inputs_folders_so_same_named_files_stay_apart(cls_run, tmp_path):
    for sub, color in (("a", "red"), ("b/c", "blue")):
        (tmp_path / "in" / sub).mkdir(parents=True)
        Image.new("RGB", (32, 32), color).save(tmp_path / "in" / sub / "000.png")
    drawn = tmp_path / "drawn"
    out = tmp_path / "p.jsonl"
    assert main(["predict", str(cls_run["ckpt"]), str(tmp_path / "in"), "--out", str(out), "--draw", str(drawn)]) == 0
    assert sorted(str(p.relative_to(drawn)) for p in drawn.rglob("*.png")) == ["a/000.png", "b/c/000.png"]


def test_records_give_boxes_to_a_hundredth_of_a_pixel_and_scores_to_four_decimals(det_run, cls_run, tmp_path):
    from accel_trainer.tasks import build_task

    images = build_task(load_recipe(det_run["recipe"])).data_paths()["val_images"]
    assert main(["predict", str(det_run["ckpt"]), str(images), "--out", str(tmp_path / "det.jsonl")]) == 0
    records = read_jsonl(tmp_path / "det.jsonl")
    coords = [v for r in records for box in r["boxes"] for v in box]
    scores = [s for r in records for s in r["scores"]]
    assert coords and all(v == round(v, 2) for v in coords) and all(s == round(s, 4) for s in scores)
    assert main(["predict", str(cls_run["ckpt"]), str(cls_run["val_root"]), "--out", str(tmp_path / "c.jsonl")]) == 0
    assert all(e["score"] == round(e["score"], 4) for r in read_jsonl(tmp_path / "c.jsonl") for e in r["topk"])
