"""SaveBestHook in real runs: one best folder, weights only, and mmcv's rule inference."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from accel_trainer import Trainer
from accel_trainer.hooks.save_best import infer_rule


def folders(trainer: Trainer) -> set[str]:
    return {p.name for p in trainer.checkpoints.root.iterdir() if p.is_dir()}


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
    state = json.loads((trainer.checkpoints.root / best[0] / "trainer_state.json").read_text())
    assert state["best"]["value"] == pytest.approx(min(r["loss"] for r in val))
    # The best checkpoint is weights only, and `latest` never points at it.
    assert not (trainer.checkpoints.root / best[0] / "optimizer.safetensors").exists()
    assert not (trainer.checkpoints.root / "latest").exists()


def test_rule_inference_follows_mmcv():
    assert infer_rule("top1", [], []) == "greater"
    assert infer_rule("bbox_mAP_50", [], []) == "greater"
    assert infer_rule("AR@100", [], []) == "greater"
    assert infer_rule("loss", [], []) == "less"
    assert infer_rule("err", ["err"], []) == "greater"
