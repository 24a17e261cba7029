from __future__ import annotations

import pytest
import torch

from accel_trainer import Hook, Trainer
from accel_trainer.hooks.freeze import resolve_modules


class Snapshots(Hook):
    """Records weights, BN stats and the batch size at each epoch boundary."""

    def __init__(self) -> None:
        self.seen: list[dict] = []

    def _snap(self, trainer) -> dict:
        model = trainer.unwrapped_model
        return {
            "stem": model.conv1[0].weight.detach().clone(),
            "bn_mean": model.bn1.running_mean.detach().clone(),
            "head": model.get_classifier().weight.detach().clone(),
            "batch_size": trainer.train_batch_size,
            "iters": trainer.inner_iter,
        }

    def before_run(self, trainer) -> None:
        self.seen.append(self._snap(trainer))

    def after_train_epoch(self, trainer) -> None:
        self.seen.append(self._snap(trainer))


def test_backbone_alias_is_everything_but_the_head(tiny_recipe):
    import timm

    model = timm.create_model("resnet10t", num_classes=4)
    modules = resolve_modules(model, ["backbone"])
    assert "fc" not in modules and {"conv1", "bn1", "layer4"} <= set(modules)


def test_freeze_then_unfreeze(tiny_recipe, capsys):
    snaps = Snapshots()
    trainer = Trainer.from_recipe(
        tiny_recipe,
        overrides={"freeze": {"modules": ["backbone"], "epochs": 1, "batch_size": 8}, "runner.max_epochs": 2},
        hooks=[snaps],
    )
    trainer.fit()
    start, frozen, unfrozen = snaps.seen
    assert torch.equal(start["stem"], frozen["stem"]), "backbone changed while frozen"
    assert torch.equal(start["bn_mean"], frozen["bn_mean"]), "frozen BN running stats moved"
    assert not torch.equal(start["head"], frozen["head"]), "head did not train while backbone frozen"
    assert not torch.equal(frozen["stem"], unfrozen["stem"]), "backbone did not train after unfreezing"
    assert not torch.equal(frozen["bn_mean"], unfrozen["bn_mean"])
    assert (frozen["batch_size"], frozen["iters"]) == (8, 16)
    assert (unfrozen["batch_size"], unfrozen["iters"]) == (16, 8)
    out = capsys.readouterr().out
    assert "freeze: from epoch 1 " in out and "frozen, batch size 8" in out
    assert "freeze: from epoch 2 " in out and "trainable again, batch size 16" in out


def test_resume_inside_the_frozen_stage_stays_frozen_then_unfreezes(tiny_recipe):
    stages = {
        "freeze": {"modules": ["backbone"], "epochs": 2, "batch_size": 8},
        "workflow": [["train", 1]],
        "checkpoint_config.interval": 1,
        "auto_scale_lr": {"enable": True, "base_batch_size": 16},
    }
    Trainer.from_recipe(tiny_recipe, overrides={**stages, "runner.max_epochs": 1}).fit()
    snaps = Snapshots()
    resumed = Trainer.from_recipe(tiny_recipe, overrides={**stages, "runner.max_epochs": 3}, hooks=[snaps])
    lrs = []
    resumed.register_hook(type("LrProbe", (Hook,), {"after_train_iter": lambda self, t: lrs.append(t.current_lr())})())
    resumed.fit(resume=True)
    start, second, third = snaps.seen
    assert torch.equal(start["stem"], second["stem"]), "the resumed frozen stage trained the backbone"
    assert not torch.equal(second["stem"], third["stem"])
    assert (second["batch_size"], second["iters"]) == (8, 16)
    assert (third["batch_size"], third["iters"]) == (16, 8)
    # auto_scale_lr: lr 1e-3 is for batch 16, so the frozen stage at batch 8 runs at half of it.
    assert max(lrs[:16]) == pytest.approx(0.0005) and max(lrs[16:]) == pytest.approx(0.001)


def test_two_batch_sizes_one_run_length_for_loop_schedule_and_checkpoints(tiny_recipe, tmp_path, capsys):
    """Frozen epochs at batch 8 (16 steps), then batch 16 (8 steps): 16 + 16 + 8 = 40 iterations."""
    from accel_trainer.cli import main

    stages = {
        "freeze": {"modules": ["backbone"], "epochs": 2, "batch_size": 8},
        "runner.max_epochs": 3,
        "workflow": [["train", 1]],
        "lr_config": {
            "policy": "CosineAnnealing",
            "min_lr": 0.0,
            "by_epoch": False,
            "warmup": "linear",
            "warmup_iters": 10,
            "warmup_ratio": 0.1,
        },
        "auto_scale_lr": {"enable": True, "base_batch_size": 16},
        "checkpoint_config": {"interval": 1000, "by_epoch": False},
        "log_config.interval": 1,
        "evaluation.interval": 100,
    }
    lrs: list[float] = []
    probe = type("LrProbe", (Hook,), {"after_train_iter": lambda self, t: lrs.append(t.current_lr())})()
    trainer = Trainer.from_recipe(tiny_recipe, overrides=stages, hooks=[probe])
    trainer.fit()
    assert trainer.max_iters == trainer.iter == 40 and len(lrs) == 40
    ckpts = trainer.checkpoints.root
    assert (ckpts / "iter_40").is_dir(), "save_last did not write the final iteration"
    assert "eta: -" not in capsys.readouterr().out

    sets = [
        f"{k}={v}"
        for k, v in {
            "freeze": '{modules = ["backbone"], epochs = 2, batch_size = 8}',
            "runner.max_epochs": 3,
            "lr_config": '{policy = "CosineAnnealing", min_lr = 0.0, by_epoch = false, warmup = "linear", '
            "warmup_iters = 10, warmup_ratio = 0.1}",
            "auto_scale_lr": "{enable = true, base_batch_size = 16}",
        }.items()
    ]
    csv = tmp_path / "s.csv"
    assert main(["schedule", str(tiny_recipe), "--num-processes", "1", "--csv", str(csv), "--set", *sets]) == 0
    rows = csv.read_text().splitlines()[1:]
    assert len(rows) == 40
    assert [float(r.split(",")[2]) for r in rows] == pytest.approx(lrs, rel=1e-12)


def test_schedule_previews_the_lr_of_n_processes(tiny_recipe, tmp_path):
    from accel_trainer.cli import main

    sets = ["auto_scale_lr={enable = true, base_batch_size = 16}", "runner.max_epochs=1"]
    peaks = []
    for n in (1, 8):
        csv = tmp_path / f"s{n}.csv"
        assert main(["schedule", str(tiny_recipe), "--num-processes", str(n), "--csv", str(csv), "--set", *sets]) == 0
        rows = csv.read_text().splitlines()[1:]
        peaks.append((len(rows), max(float(r.split(",")[2]) for r in rows)))
    assert peaks[0] == (8, pytest.approx(0.001))  # 128 images / 16 on one process
    assert peaks[1] == (1, pytest.approx(0.008))  # 8 processes: one step per epoch, lr x 8


def test_warmup_longer_than_the_run_is_named(tiny_recipe, capsys):
    from accel_trainer.cli import main

    assert (
        main(
            [
                "schedule",
                str(tiny_recipe),
                "--num-processes",
                "1",
                "--csv",
                "/dev/null",
                "--set",
                'lr_config={policy = "fixed", warmup = "linear", warmup_iters = 500}',
            ]
        )
        == 0
    )
    err = capsys.readouterr().err
    assert "warmup (500 iterations) is longer than the whole run (16 iterations)" in err
