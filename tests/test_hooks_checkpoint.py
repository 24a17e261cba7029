"""CheckpointHook and SaveBestHook in real runs: intervals, max_keep_ckpts, save_last, save_best."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from accel_trainer import Trainer
from accel_trainer.hooks.checkpoint import infer_rule


def folders(trainer: Trainer) -> set[str]:
    return {p.name for p in trainer.checkpointer.root.iterdir() if p.is_dir()}


def test_interval_max_keep_and_save_last(tiny_recipe):
    trainer = Trainer.from_recipe(
        tiny_recipe,
        overrides={
            "runner.max_epochs": 5,
            "workflow": [["train", 1]],
            "checkpoint_config": {"interval": 2, "max_keep_ckpts": 2, "save_last": True},
        },
    )
    trainer.fit()
    # Saved at epochs 2, 4 (interval) and 5 (last); only the newest two are kept.
    assert folders(trainer) == {"epoch_4", "epoch_5"}
    assert (trainer.checkpointer.root / "latest").read_text().strip() == "epoch_5"


def test_without_save_last_only_the_interval_counts(tiny_recipe):
    trainer = Trainer.from_recipe(
        tiny_recipe,
        overrides={
            "runner.max_epochs": 3,
            "workflow": [["train", 1]],
            "checkpoint_config": {"interval": 2, "save_last": False},
        },
    )
    trainer.fit()
    assert folders(trainer) == {"epoch_2"}


def test_iteration_checkpoints_in_an_iteration_runner_default_to_iterations(tiny_recipe):
    trainer = Trainer.from_recipe(
        tiny_recipe,
        overrides={
            "runner": {"type": "IterBasedRunner", "max_iters": 10},
            "workflow": [["train", 5]],
            "checkpoint_config": {"interval": 4},
        },
    )
    trainer.fit()
    assert folders(trainer) == {"iter_4", "iter_8", "iter_10"}


def test_save_best_keeps_one_best_folder_that_holds_the_best_value(tiny_recipe):
    trainer = Trainer.from_recipe(
        tiny_recipe,
        overrides={
            "runner.max_epochs": 3,
            "checkpoint_config": {"interval": 10, "save_last": False},
            "evaluation": {"save_best": "loss"},
        },
    )
    trainer.fit()
    best = [name for name in folders(trainer) if name.startswith("best_")]
    assert len(best) == 1, folders(trainer)
    (log_json,) = Path(trainer.work_dir).glob("*.log.json")
    val = [json.loads(line) for line in log_json.read_text().splitlines() if '"mode": "val"' in line]
    best_epoch = min(val, key=lambda r: r["loss"])["epoch"]
    assert best == [f"best_loss_epoch_{best_epoch}"]
    state = json.loads((trainer.checkpointer.root / best[0] / "trainer_state.json").read_text())
    assert state["best"]["value"] == pytest.approx(min(r["loss"] for r in val))
    # The best checkpoint is weights only, and `latest` never points at it.
    assert not (trainer.checkpointer.root / best[0] / "optimizer.safetensors").exists()
    assert not (trainer.checkpointer.root / "latest").exists()


def test_rule_inference_follows_mmcv():
    assert infer_rule("top1", [], []) == "greater"
    assert infer_rule("bbox_mAP_50", [], []) == "greater"
    assert infer_rule("AR@100", [], []) == "greater"
    assert infer_rule("loss", [], []) == "less"
    assert infer_rule("err", ["err"], []) == "greater"
