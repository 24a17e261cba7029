"""Logger hooks: mmcv's interval / ignore_last / reset_flag / by_epoch, and what trackers receive."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from accel_trainer import Trainer, load_recipe
from accel_trainer.errors import RecipeError
from accel_trainer.hooks.logger import flat_hparams


def records(work_dir: Path, mode: str) -> list[dict]:
    (log_json,) = Path(work_dir).glob("*.log.json")
    return [r for r in map(json.loads, log_json.read_text().splitlines()) if r["mode"] == mode]


def run(recipe: Path, **overrides) -> Trainer:
    trainer = Trainer.from_recipe(recipe, overrides={"log_config.interval": 3, **overrides})
    trainer.fit()
    return trainer


def test_tensorboard_gets_train_and_val_scalars_and_the_recipe_once(tiny_recipe):
    # The text logger clears the window (reset_flag) before TensorBoard writes it, as in mmcv
    # the later hook still gets the same averaged values.
    hooks = [{"type": "TextLoggerHook", "reset_flag": True}, {"type": "TensorboardLoggerHook"}]
    trainer = run(tiny_recipe, **{"runner.max_epochs": 1, "log_config.hooks": hooks})
    train, val = records(trainer.work_dir, "train"), records(trainer.work_dir, "val")
    events = EventAccumulator(str(Path(trainer.work_dir) / "tf_logs"))
    events.Reload()

    def scalars(tag: str) -> list[tuple[int, float]]:
        return [(e.step, e.value) for e in events.Scalars(tag)]

    assert [s for s, _ in scalars("train/loss")] == [3, 6]
    assert [v for _, v in scalars("train/loss")] == pytest.approx([r["loss"] for r in train])
    assert [v for _, v in scalars("train/lr")] == pytest.approx([1e-3, 1e-3])
    assert scalars("val/top1") == [(8, pytest.approx(val[0]["top1"]))]
    assert scalars("val/loss") == [(8, pytest.approx(val[0]["loss"]))]

    (hparams_run,) = Path(trainer.work_dir, "tf_logs").glob("*/events.out.tfevents.*")
    content = EventAccumulator(str(hparams_run))
    content.Reload()
    start = content.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = plugin_data_pb2.HParamsPluginData.FromString(start).session_start_info.hparams
    assert hparams["model.backbone"].string_value == "resnet10t"
    assert hparams["log_config.interval"].number_value == 3
    assert json.loads(hparams["workflow"].string_value) == [["train", 1], ["val", 1]]


def test_flat_hparams_are_tracker_scalars():
    flat = flat_hparams({"a": {"b": 1, "c": [1, 2], "d": {"e": "x"}}, "f": True, "g": {"h": None}})
    assert flat == {"a.b": 1, "a.c": "[1, 2]", "a.d.e": "x", "f": True, "g.h": "null"}


@pytest.mark.parametrize(
    "ignore_last, expected",
    [(True, [(1, 3), (1, 6), (2, 3), (2, 6)]), (False, [(1, 3), (1, 6), (1, 8), (2, 3), (2, 6), (2, 8)])],
)
def test_interval_and_ignore_last_per_epoch(tiny_recipe, ignore_last, expected):
    # 8 iterations per epoch, interval 3: the window of iterations 7-8 is written only when
    # ignore_last is off, and the count restarts each epoch.
    trainer = run(tiny_recipe, **{"log_config.ignore_last": ignore_last, "workflow": [["train", 1]]})
    assert [(r["epoch"], r["iter"]) for r in records(trainer.work_dir, "train")] == expected


def test_by_epoch_false_counts_global_iterations(tiny_recipe):
    trainer = run(tiny_recipe, **{"log_config.by_epoch": False, "workflow": [["train", 1]]})
    assert [r["iter"] for r in records(trainer.work_dir, "train")] == [3, 6, 9, 12, 15]
    text = next(Path(trainer.work_dir).glob("*.log")).read_text()
    assert "Iter [9/16] lr:" in text and "Epoch [" not in text


@pytest.mark.parametrize("hook, package", [("WandbLoggerHook", "wandb"), ("MlflowLoggerHook", "mlflow")])
def test_missing_tracker_package_is_named(tiny_recipe, hook, package):
    if importlib.util.find_spec(package) is not None:
        pytest.skip(f"{package} is installed")
    with pytest.raises(RecipeError, match=f"pip install {package}"):
        load_recipe(tiny_recipe, {"log_config.hooks": [{"type": "TextLoggerHook"}, {"type": hook}]})
