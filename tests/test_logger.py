"""Logger hooks: mmcv's interval / ignore_last / reset_flag / by_epoch, and what trackers receive."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from accel_trainer import Trainer, load_recipe
from accel_trainer.errors import RecipeError
from accel_trainer.hooks.logger import (
    MlflowLoggerHook,
    TensorboardLoggerHook,
    WandbLoggerHook,
    flat_hparams,
    tracker_run,
)

from .helpers import REPO


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
    # The run is named after the work_dir, under mmcv's tf_logs folder.
    tb_dir = Path(trainer.work_dir) / "tf_logs" / Path(trainer.work_dir).name
    events = EventAccumulator(str(tb_dir))
    events.Reload()

    def scalars(tag: str) -> list[tuple[int, float]]:
        return [(e.step, e.value) for e in events.Scalars(tag)]

    assert [s for s, _ in scalars("train/loss")] == [3, 6]
    assert [v for _, v in scalars("train/loss")] == pytest.approx([r["loss"] for r in train])
    assert [v for _, v in scalars("train/lr")] == pytest.approx([1e-3, 1e-3])
    assert scalars("val/top1") == [(8, pytest.approx(val[0]["top1"]))]
    assert scalars("val/loss") == [(8, pytest.approx(val[0]["loss"]))]

    (hparams_run,) = tb_dir.glob("*/events.out.tfevents.*")
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


FAKE_WANDB = """
import json, os
LOG = os.environ["FAKE_WANDB_LOG"]
def _write(*item):
    with open(LOG, "a") as f:
        f.write(json.dumps(item) + "\\n")
class _Run:
    def log(self, values, step=None, **kwargs):
        _write("log", sorted(values), step)
    def finish(self):
        _write("finish")
class config:
    @staticmethod
    def update(values, allow_val_change=False):
        _write("config", len(values))
def init(project=None, **kwargs):
    _write("init", project, kwargs)
    return _Run()
"""


def test_wandb_run_is_named_after_the_work_dir_and_gets_init_kwargs(tiny_recipe, tmp_path):
    """End to end through Accelerate with a stand-in `wandb` package (with the metadata Accelerate
    looks for when it is imported, hence a fresh process) that records its calls."""
    site = tmp_path / "site"
    (site / "wandb").mkdir(parents=True)
    (site / "wandb" / "__init__.py").write_text(FAKE_WANDB)
    (site / "wandb-0.0.0.dist-info").mkdir()
    (site / "wandb-0.0.0.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: wandb\nVersion: 0.0.0\n")
    calls_file = tmp_path / "wandb_calls.jsonl"
    env = {**os.environ, "FAKE_WANDB_LOG": str(calls_file), "PYTHONPATH": os.pathsep.join([str(site), str(REPO)])}
    hooks = 'log_config.hooks=[{type = "TextLoggerHook"}, {type = "WandbLoggerHook", init_kwargs = {name = "lr1e-3", tags = ["a"]}}]'
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "accel_trainer",
            str(tiny_recipe),
            "--set",
            "runner.max_epochs=1",
            "log_config.interval=3",
            hooks,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    calls = [json.loads(line) for line in calls_file.read_text().splitlines()]
    assert calls[0] == ["init", "work", {"name": "lr1e-3", "tags": ["a"]}]  # tiny_recipe's work_dir is .../work
    assert calls[1][0] == "config" and calls[1][1] > 20  # the flattened recipe
    train_logs = [c for c in calls if c[0] == "log" and "train/loss" in c[1]]
    assert [c[2] for c in train_logs] == [3, 6]
    assert any(c[0] == "log" and "val/top1" in c[1] for c in calls)
    assert calls[-1] == ["finish"]


def test_tracker_project_names_and_init_kwargs_are_checked(tmp_path):
    work = tmp_path / "cls_run"
    assert tracker_run([TensorboardLoggerHook()], work) == ("cls_run", {})
    mlflow = MlflowLoggerHook(init_kwargs={"experiment_name": "shapes", "run_name": "r1", "tags": {"k": "v"}})
    assert tracker_run([mlflow, TensorboardLoggerHook()], work) == (
        "shapes",
        {"mlflow": {"run_name": "r1", "tags": {"k": "v"}}},
    )
    with pytest.raises(RecipeError, match="one project name"):
        tracker_run([mlflow, WandbLoggerHook(init_kwargs={"project": "other"})], work)
    assert tracker_run([WandbLoggerHook(init_kwargs={"project": "shapes"}), mlflow], work)[0] == "shapes"
    with pytest.raises(RecipeError, match=r"MlflowLoggerHook.init_kwargs.runname: .*did you mean \"run_name\""):
        tracker_run([MlflowLoggerHook(init_kwargs={"runname": "x"})], work)


@pytest.mark.parametrize(
    "hook, message",
    [
        ({"type": "TextLoggerHook", "init_kwargs": {}}, "unknown key 'log_config.hooks[0].init_kwargs'"),
        ({"type": "TensorboardLoggerHook", "init_kwargs": 3}, "init_kwargs = 3: expected a table"),
    ],
)
def test_init_kwargs_belongs_to_tracker_hooks_and_is_a_table(tiny_recipe, hook, message):
    with pytest.raises(RecipeError, match=re.escape(message)):
        load_recipe(tiny_recipe, {"log_config.hooks": [hook]})
