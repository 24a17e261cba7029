"""`--eval-only`: evaluates a checkpoint and writes work_dir/eval/metrics.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from accel_trainer.cli import main


def test_eval_only_reproduces_the_val_record_of_the_same_weights(tiny_recipe, tmp_path):
    assert main([str(tiny_recipe), "--set", "runner.max_epochs=1", "checkpoint_config.interval=1"]) == 0
    work = tmp_path / "work"
    (log_json,) = work.glob("*.log.json")
    (val,) = [json.loads(line) for line in log_json.read_text().splitlines() if '"mode": "val"' in line]
    ckpt = work / "checkpoints" / "epoch_1"
    eval_dir = tmp_path / "eval_run"
    assert main([str(tiny_recipe), "--eval-only", "--checkpoint", str(ckpt), "--work-dir", str(eval_dir)]) == 0
    metrics = json.loads((eval_dir / "eval" / "metrics.json").read_text())
    assert metrics["num_samples"] == 21
    assert "top5" not in metrics  # 4 classes: top-5 would be 100 by definition
    for key in ("top1", "loss"):
        assert metrics[key] == pytest.approx(val[key], abs=1e-4), key


def test_eval_only_with_a_tampered_checkpoint_exits_2(tiny_recipe, tmp_path, capsys):
    assert main([str(tiny_recipe), "--set", "runner.max_epochs=1", 'workflow=[["train", 1]]']) == 0
    ckpt = tmp_path / "work" / "checkpoints" / "epoch_1"
    model = ckpt / "model.safetensors"
    data = bytearray(model.read_bytes())
    data[-1] ^= 0xFF
    model.write_bytes(bytes(data))
    assert main([str(tiny_recipe), "--eval-only", "--checkpoint", str(ckpt)]) == 2
    assert "model.safetensors" in capsys.readouterr().err
    assert not (Path(tmp_path / "work") / "eval" / "metrics.json").exists()


def test_eval_only_leaves_out_the_optimizer_table_and_the_warmup_warning(tmp_path, capsys):
    from .helpers.recipes import write_recipe

    recipe = write_recipe(tmp_path, lr_config={"policy": "fixed", "warmup": "linear", "warmup_iters": 500})
    assert main([str(recipe), "--eval-only", "--set", "runner.max_epochs=1"]) == 0
    out = capsys.readouterr().out
    assert "top1" in out and "param groups" not in out and "warmup" not in out
    assert main([str(recipe), "--set", "runner.max_epochs=1", 'workflow=[["train", 1]]']) == 0
    out = capsys.readouterr().out
    assert "param groups" in out and "the warmup (500 iterations) is longer than the whole run" in out
