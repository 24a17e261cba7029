"""Preemption: a stop signal ends the run after the next optimizer step, with a resumable checkpoint of it.

The end-to-end runs (SIGTERM from outside, to loader workers too and in DDP, then `--resume auto`
bit-identical to an uninterrupted run) are in test_trainer_resume.py, beside the reference runs
they compare with.
"""

from __future__ import annotations

import os
import signal

import pytest

from accel_trainer import Hook, Trainer
from accel_trainer.checkpoint import format as checkpoint
from accel_trainer.loop.preemption import SIGNALS, Preemption


class SignalAt(Hook):
    """Sends `signum` to this process after iteration `at`, as a scheduler would mid-run."""

    def __init__(self, at: int, signum: int) -> None:
        self.at, self.signum = at, signum

    def after_train_iter(self, trainer) -> None:
        if trainer.iter == self.at:
            os.kill(os.getpid(), self.signum)


def handlers() -> dict[int, object]:
    return {sig: signal.getsignal(sig) for sig in SIGNALS}


def test_the_first_signal_is_recorded_and_the_previous_handlers_come_back():
    before = handlers()
    preemption = Preemption()
    preemption.install()
    os.kill(os.getpid(), signal.SIGUSR1)
    os.kill(os.getpid(), signal.SIGTERM)
    assert preemption.signum == signal.SIGUSR1
    preemption.uninstall()
    assert handlers() == before


@pytest.mark.parametrize(
    "runner, signum, name",
    [
        ({"type": "EpochBasedRunner", "max_epochs": 2}, signal.SIGTERM, "epoch_2_iter_11"),
        ({"type": "IterBasedRunner", "max_iters": 16}, signal.SIGUSR1, "iter_11"),
    ],
)
def test_a_stop_signal_ends_the_run_after_the_next_step_with_its_checkpoint(tiny_recipe, runner, signum, name):
    before = handlers()
    overrides = {"runner": runner, "workflow": [["train", 1]], "evaluation.interval": 100}
    trainer = Trainer.from_recipe(tiny_recipe, overrides=overrides, hooks=[SignalAt(10, signum)])
    with pytest.raises(SystemExit) as stopped:
        trainer.fit()
    # The signal came during step 10's hooks; step 11 was voted on, applied and checkpointed.
    assert stopped.value.code == 128 + signum and trainer.iter == 11
    root = trainer.checkpoints.root
    assert (root / "latest").read_text().strip() == name
    assert checkpoint.find_resumable(root, need_optimizer=True) == root / name
    assert handlers() == before


def test_the_steps_own_interval_checkpoint_is_not_written_twice(tiny_recipe):
    overrides = {
        "runner": {"type": "IterBasedRunner", "max_iters": 16},
        "workflow": [["train", 1]],
        "evaluation.interval": 100,
        "checkpoint_config.interval": 11,
    }
    trainer = Trainer.from_recipe(tiny_recipe, overrides=overrides, hooks=[SignalAt(10, signal.SIGTERM)])
    with pytest.raises(SystemExit):
        trainer.fit()
    log = "\n".join(p.read_text() for p in trainer.work_dir.glob("*.log"))
    assert log.count("saved checkpoint") == 1 and "iter_11" in log.split("saved checkpoint")[1]
    assert (trainer.checkpoints.root / "latest").read_text().strip() == "iter_11"
