"""EMA of the weights: the average itself, when it updates, val records, checkpoints, resume, export, DDP."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file
from timm.utils.model_ema import ModelEmaV3
from torch import nn

from accel_trainer import Trainer
from accel_trainer.cli import main
from accel_trainer.errors import RecipeError
from accel_trainer.recipe.load import load_recipe

from .helpers.launch import launch
from .helpers.recipes import write_recipe

EMA_ON = {"ema.enable": True}


def drive(hook, weights: list[torch.Tensor]) -> nn.Linear:
    """Feed the hook weight w_k after optimizer step k (k = 1..N), as the trainer would."""
    model = nn.Linear(3, 2, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(weights[0])
    trainer = SimpleNamespace(unwrapped_model=model, iter=0, accelerator=SimpleNamespace(num_processes=1))
    hook.before_run(trainer)
    for k, w in enumerate(weights[1:], start=1):
        with torch.no_grad():
            model.weight.copy_(w)
        trainer.iter = k
        hook.after_train_iter(trainer)
    return hook.ema.module


def weight_sequence(n: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return [torch.randn(2, 3, generator=gen, dtype=torch.float64) for _ in range(n + 1)]


def test_ema_without_warmup_matches_the_closed_form():
    from accel_trainer.hooks.ema import EMAHook

    d, n = 0.9, 7
    w = weight_sequence(n)
    ema = drive(EMAHook(decay=d, warmup=False), w)
    expected = d**n * w[0] + (1 - d) * sum(d ** (n - k) * w[k] for k in range(1, n + 1))
    torch.testing.assert_close(ema.weight, expected, rtol=1e-12, atol=1e-12)


def timm_warmup_decay(step: int, decay: float) -> float:
    """timm's documented warmup: no averaging at the first step, then 1 - (1 + t)^(-2/3) capped at decay."""
    t = step - 1
    return 0.0 if t <= 0 else min(decay, 1 - (1 + t) ** (-2 / 3))


@pytest.mark.parametrize("interval", [1, 3])
def test_ema_with_warmup_follows_the_global_step_and_the_update_interval(interval):
    from accel_trainer.hooks.ema import EMAHook

    d, n = 0.6, 9
    w = weight_sequence(n)
    ema = drive(EMAHook(decay=d, warmup=True, update_interval=interval), w)
    expected = w[0]
    for k in range(interval, n + 1, interval):
        decay = timm_warmup_decay(k, d)
        expected = decay * expected + (1 - decay) * w[k]
    torch.testing.assert_close(ema.weight, expected, rtol=1e-12, atol=1e-12)


def test_recipe_checks_decay_and_interval(tiny_recipe):
    with pytest.raises(RecipeError, match="ema.decay"):
        load_recipe(tiny_recipe, {"ema.decay": 1.0})
    with pytest.raises(RecipeError, match="ema.update_interval"):
        load_recipe(tiny_recipe, {"ema.update_interval": 0})


def test_updates_once_per_optimizer_step_and_val_record_reports_ema_and_raw(tiny_recipe, monkeypatch):
    steps: list[int | None] = []
    original = ModelEmaV3.update

    def counting(self, model, step=None):
        steps.append(step)
        original(self, model, step=step)

    monkeypatch.setattr(ModelEmaV3, "update", counting)
    overrides = {**EMA_ON, "runner.max_epochs": 1, "accelerate.gradient_accumulation_steps": 2}
    trainer = Trainer.from_recipe(tiny_recipe, overrides=overrides)
    trainer.fit()
    assert steps == [1, 2, 3, 4]  # 8 batches, accumulation 2: four optimizer steps, four updates

    (log_json,) = Path(trainer.work_dir).glob("*.log.json")
    (val,) = [r for r in map(json.loads, log_json.read_text().splitlines()) if r["mode"] == "val"]
    assert {"top1", "raw_top1", "loss", "raw_loss"} <= val.keys() and "raw_num_samples" not in val
    (hook,) = [h for h in trainer.hooks if type(h).__name__ == "EMAHook"]
    ema_model, raw_model = hook.ema.module, trainer.unwrapped_model
    assert not torch.equal(ema_model.fc.weight, raw_model.fc.weight)
    trainer.model.eval()
    assert val["loss"] == pytest.approx(trainer.val_pass(ema_model)["loss"], abs=1e-5)
    assert val["raw_loss"] == pytest.approx(trainer.val_pass(trainer.model)["loss"], abs=1e-5)


def test_without_ema_eval_the_val_record_has_no_raw_keys(tiny_recipe):
    trainer = Trainer.from_recipe(tiny_recipe, overrides={**EMA_ON, "ema.eval": False, "runner.max_epochs": 1})
    trainer.fit()
    assert "top1" in trainer.val_results and not any(k.startswith("raw_") for k in trainer.val_results)


def test_detection_val_record_holds_the_ema_copy_and_raw_metrics(tmp_path):
    from .helpers.recipes import det_recipe

    trainer = Trainer.from_recipe(det_recipe(tmp_path), overrides=EMA_ON)
    trainer.fit()
    (log_json,) = Path(trainer.work_dir).glob("*.log.json")
    (val,) = [r for r in map(json.loads, log_json.read_text().splitlines()) if r["mode"] == "val"]
    assert {"bbox_mAP", "raw_bbox_mAP", "loss", "raw_loss", "loss_cls", "raw_loss_cls"} <= val.keys()
    (hook,) = [h for h in trainer.hooks if type(h).__name__ == "EMAHook"]
    ema = hook.ema.module
    before = {k: v.clone() for k, v in ema.state_dict().items()}
    again = trainer.val_pass(ema)
    assert (again["loss"], again["bbox_mAP"]) == (val["loss"], val["bbox_mAP"])
    # The val pass leaves the EMA copy in eval mode with its own (averaged) BatchNorm statistics.
    assert not ema.training and all(torch.equal(before[k], v) for k, v in ema.state_dict().items())
    trainer.model.eval()
    assert trainer.val_pass(trainer.model)["loss"] == val["raw_loss"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two epochs straight, and one epoch then a resume for the second, both saving every epoch."""
    tmp = tmp_path_factory.mktemp("ema_resume")
    recipe = write_recipe(tmp)
    sets = {**EMA_ON, "checkpoint_config.interval": 1}
    straight = Trainer.from_recipe(recipe, overrides=sets, work_dir=tmp / "straight")
    straight.fit()
    first = Trainer.from_recipe(recipe, overrides={**sets, "runner.max_epochs": 1}, work_dir=tmp / "split")
    first.fit()
    resumed = Trainer.from_recipe(recipe, overrides=sets, work_dir=tmp / "split")
    resumed.fit(resume=True)
    return straight, resumed


def test_resume_continues_the_ema_bit_exactly(runs):
    straight, resumed = runs
    a = load_file(straight.checkpoints.root / "epoch_2" / "ema.safetensors")
    b = load_file(resumed.checkpoints.root / "epoch_2" / "ema.safetensors")
    assert a.keys() == b.keys() and any("running_mean" in k for k in a)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    manifest = json.loads((straight.checkpoints.root / "epoch_2" / "manifest.json").read_text())
    assert "ema.safetensors" in manifest["sha256"]


def test_export_ema_writes_the_ema_weights(runs, tmp_path):
    straight, _ = runs
    ckpt = straight.checkpoints.root / "epoch_2"
    out = tmp_path / "ema.safetensors"
    assert main(["export", str(ckpt), "--out", str(out), "--ema"]) == 0
    exported, saved = load_file(out), load_file(ckpt / "ema.safetensors")
    raw = load_file(ckpt / "model.safetensors")
    assert exported.keys() == saved.keys()
    assert all(torch.equal(exported[k], saved[k]) for k in saved)
    assert not torch.equal(exported["fc.weight"], raw["fc.weight"])


def test_eval_only_evaluates_the_checkpoint_ema_and_raw_weights(runs, tmp_path):
    straight, _ = runs
    (log_json,) = Path(straight.work_dir).glob("*.log.json")
    val = [r for r in map(json.loads, log_json.read_text().splitlines()) if r["mode"] == "val"][-1]
    ckpt = straight.checkpoints.root / "epoch_2"
    # The recipe itself has no [ema]: the checkpoint's EMA weights are evaluated all the same.
    args = [straight.recipe.source, "--eval-only", "--checkpoint", str(ckpt), "--work-dir", str(tmp_path / "ev")]
    assert main(args) == 0
    metrics = json.loads((tmp_path / "ev" / "eval" / "metrics.json").read_text())
    for key in ("loss", "top1", "raw_loss", "raw_top1"):
        assert metrics[key] == pytest.approx(val[key], abs=1e-4), key


CHECKSUM_HOOK = """
import hashlib, json
from pathlib import Path
from accel_trainer import Hook

class EmaChecksum(Hook):
    def after_run(self, trainer):
        (ema,) = [h.ema for h in trainer.hooks if type(h).__name__ == "EMAHook"]
        digest = hashlib.sha256()
        for key, value in sorted(ema.module.state_dict().items()):
            digest.update(key.encode() + value.detach().cpu().contiguous().numpy().tobytes())
        out = Path(trainer.work_dir) / f"ema_rank{trainer.accelerator.process_index}.json"
        out.write_text(json.dumps({"sha256": digest.hexdigest()}))
"""


@pytest.mark.multiprocess
def test_ddp_ranks_keep_identical_emas(tmp_path):
    (tmp_path / "ema_probe.py").write_text(CHECKSUM_HOOK)
    recipe = write_recipe(tmp_path)
    sets = [
        "ema.enable=true",
        "runner.max_epochs=1",
        "checkpoint_config.interval=1",
        'custom_hooks=[{type = "ema_probe:EmaChecksum"}]',
    ]
    proc = launch(recipe, *[arg for s in sets for arg in ("--set", s)], port=29651, hooks_dir=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    work = tmp_path / "work"
    ranks = [json.loads((work / f"ema_rank{i}.json").read_text())["sha256"] for i in (0, 1)]
    assert ranks[0] == ranks[1]
    saved = load_file(work / "checkpoints" / "epoch_1" / "ema.safetensors")
    digest = hashlib.sha256()
    for key, value in sorted(saved.items()):
        digest.update(key.encode() + value.numpy().tobytes())
    assert digest.hexdigest() == ranks[0]
