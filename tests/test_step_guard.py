"""The step guard: non-finite losses stop, skip or roll back as `[nan_guard]` says."""

from __future__ import annotations

import shutil

import pytest
import torch

from accel_trainer import Trainer
from accel_trainer.checkpoint import format as checkpoint
from accel_trainer.loop.step_guard import NonFiniteError

ONE_EPOCH = {
    "runner.max_epochs": 1,
    "workflow": [["train", 1]],
    "checkpoint_config": {"by_epoch": False, "interval": 2},
}


def poison(trainer: Trainer, iterations: set[int]) -> None:
    """Make the loss NaN once in each given (1-based) iteration, as a diverging step would."""
    train_loss = trainer.task.train_loss

    def poisoned(model, batch):
        loss, outputs = train_loss(model, batch)
        if trainer.iter + 1 in iterations and trainer.accelerator.sync_gradients:
            iterations.discard(trainer.iter + 1)
            loss = loss * float("nan")
            outputs["loss"] = loss.detach()
        return loss, outputs

    trainer.task.train_loss = poisoned


def all_finite(trainer: Trainer) -> bool:
    return all(torch.isfinite(v).all() for v in trainer.unwrapped_model.state_dict().values() if v.is_floating_point())


def test_nan_stop_names_the_iteration_and_the_loss(tiny_recipe):
    trainer = Trainer.from_recipe(tiny_recipe, overrides=ONE_EPOCH)
    poison(trainer, {3})
    with pytest.raises(NonFiniteError, match=r"iteration 3 \(epoch 1\): loss=nan"):
        trainer.fit()
    assert all_finite(trainer)  # the bad step was never applied
    assert trainer.checkpoints.last == "iter_2"


def test_nan_skip_leaves_the_step_out_and_stops_after_max_skips_in_a_row(tiny_recipe, capsys):
    trainer = Trainer.from_recipe(tiny_recipe, overrides={**ONE_EPOCH, "nan_guard": {"action": "skip", "max_skips": 2}})
    poison(trainer, {3, 6, 7})
    trainer.fit()
    assert trainer.iter == 8 and all_finite(trainer)
    assert capsys.readouterr().out.count("nan_guard: skipped") == 3
    trainer = Trainer.from_recipe(tiny_recipe, overrides={**ONE_EPOCH, "nan_guard": {"action": "skip", "max_skips": 2}})
    poison(trainer, {3, 4, 5})
    with pytest.raises(NonFiniteError, match="3 steps in a row, more than nan_guard.max_skips = 2"):
        trainer.fit()


def test_nan_rollback_reloads_the_newest_checkpoint_with_a_smaller_lr(tiny_recipe, capsys):
    overrides = {**ONE_EPOCH, "nan_guard": {"action": "rollback", "max_skips": 1, "rollback_lr_factor": 0.25}}
    trainer = Trainer.from_recipe(tiny_recipe, overrides=overrides)
    poison(trainer, {5})
    trainer.fit()
    assert "rolled back to iter_4, lr x 0.25" in capsys.readouterr().out
    assert trainer.iter == 8 and all_finite(trainer)
    assert trainer.current_lr() == pytest.approx(0.25 * 0.001)
    # The factor travels with later checkpoints, so a resumed run keeps it.
    saved = checkpoint.load_checkpoint(trainer.checkpoints.root / "iter_8").extra_tensors["nan_guard"]
    assert float(saved["lr_factor"]) == 0.25 and int(saved["rollbacks"]) == 1

    trainer = Trainer.from_recipe(tiny_recipe, overrides=overrides)
    shutil.rmtree(trainer.checkpoints.root)
    poison(trainer, {1})
    with pytest.raises(NonFiniteError, match="no resumable checkpoint"):
        trainer.fit()


def poison_inputs(trainer: Trainer, iterations: set[int]) -> None:
    """Feed NaN images in each given (1-based) iteration: the forward pass itself turns BatchNorm's
    running statistics non-finite, as a diverging model does."""
    train_loss = trainer.task.train_loss

    def poisoned(model, batch):
        if trainer.iter + 1 in iterations:
            iterations.discard(trainer.iter + 1)
            images, targets = batch
            batch = (images * float("nan"), targets)
        return train_loss(model, batch)

    trainer.task.train_loss = poisoned


EVERY_ITER = {**ONE_EPOCH, "checkpoint_config": {"by_epoch": False, "interval": 1}}


def test_nan_rollback_acts_before_the_checkpoint_of_its_step(tiny_recipe, capsys):
    overrides = {**EVERY_ITER, "nan_guard": {"action": "rollback", "max_skips": 1}}
    trainer = Trainer.from_recipe(tiny_recipe, overrides=overrides)
    poison_inputs(trainer, {3})
    trainer.fit()  # no "iter_3: not written: ... not finite"
    assert "rolled back to iter_2" in capsys.readouterr().out
    assert trainer.iter == 8 and all_finite(trainer)
    assert trainer.checkpoints.find_resumable() == trainer.checkpoints.root / "iter_8"


def test_nan_skip_puts_back_the_buffers_its_forward_changed(tiny_recipe, capsys):
    trainer = Trainer.from_recipe(
        tiny_recipe, overrides={**EVERY_ITER, "nan_guard": {"action": "skip", "max_skips": 1}}
    )
    poison_inputs(trainer, {3})
    trainer.fit()
    assert capsys.readouterr().out.count("nan_guard: skipped") == 1  # the steps after it are finite again
    assert trainer.iter == 8 and all_finite(trainer)
