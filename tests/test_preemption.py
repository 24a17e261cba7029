"""Preemption: a stop signal ends the run after the next optimizer step, with a resumable checkpoint of it.

The end-to-end runs (SIGTERM from outside, to loader workers too and in DDP, then `--resume auto`
bit-identical to an uninterrupted run) are in test_trainer_resume.py, beside the reference runs
they compare with. Here: signals at the end of a run, stops that cannot reach a step boundary,
and the exit code through `accelerate launch`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from accel_trainer import Hook, Trainer
from accel_trainer.errors import RecipeError
from accel_trainer.loop.preemption import SIGNALS, TIMEOUT_ENV, Preemption, is_launcher

from .helpers import REPO
from .helpers.launch import launch, run_group
from .helpers.recipes import write_recipe
from .helpers.resume import KILL_HOOK


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


def test_a_sigterm_delivered_twice_at_once_is_one(monkeypatch):
    # A scheduler signals every process of the job and the launcher passes its own copy on.
    monkeypatch.setenv(TIMEOUT_ENV, "0")
    preemption = Preemption()
    preemption.install()
    os.kill(os.getpid(), signal.SIGTERM)
    os.kill(os.getpid(), signal.SIGTERM)
    assert preemption.signum == signal.SIGTERM
    preemption.uninstall()


def test_a_stop_timeout_that_is_not_seconds_is_one_line(monkeypatch):
    monkeypatch.setenv(TIMEOUT_ENV, "soon")
    before = handlers()
    with pytest.raises(RecipeError, match=r"ACCEL_TRAINER_STOP_TIMEOUT='soon': expected seconds, a number >= 0"):
        Preemption().install()
    assert handlers() == before


@pytest.mark.parametrize(
    "cmdline, launcher",
    [
        (["/venv/bin/python3.11", "/venv/bin/accelerate", "launch", "-m", "accel_trainer"], True),
        (["python", "-m", "accelerate.commands.launch", "--num_processes", "2"], True),
        (["/usr/bin/python3", "/venv/bin/torchrun", "--nproc-per-node", "2", "train.py"], True),
        (["python", "-m", "torch.distributed.run", "train.py"], True),
        (["/bin/bash", "job.sh"], False),
        (["python", "-m", "pytest", "tests/accelerate"], False),
        (["/venv/bin/accelerate", "config"], False),
    ],
)
def test_the_launchers_are_known_by_their_command_line(cmdline, launcher):
    assert is_launcher(cmdline) is launcher


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
    assert trainer.checkpoints.find_resumable() == root / name
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


class SignalInLastVal(Hook):
    """Sends SIGTERM during the run's last val pass, after its last optimizer step's vote."""

    def after_val_epoch(self, trainer) -> None:
        if trainer.epoch == trainer.max_epochs:
            os.kill(os.getpid(), signal.SIGTERM)


def test_a_signal_during_the_last_val_pass_is_not_dropped(tiny_recipe):
    before = handlers()
    trainer = Trainer.from_recipe(tiny_recipe, hooks=[SignalInLastVal()])
    with pytest.raises(SystemExit) as stopped:
        trainer.fit()
    assert stopped.value.code == 128 + signal.SIGTERM
    assert (trainer.checkpoints.root / "latest").read_text().strip() == "epoch_2"
    log = "\n".join(p.read_text() for p in trainer.work_dir.glob("*.log"))
    assert "preempted at epoch 2, iter 16 by SIGTERM" in log
    assert handlers() == before


def cli(tmp_path: Path, hook: str, env: dict[str, str] | None = None) -> tuple[list[str], dict[str, str]]:
    """The command and environment of the CLI on a tiny iteration-based recipe of 6 steps with a
    checkpoint every 5, with `hook` (module `hook.py` in `tmp_path`, class `Hook`) among its hooks."""
    (tmp_path / "hook.py").write_text(hook)
    recipe = write_recipe(
        tmp_path,
        runner={"type": "IterBasedRunner", "max_epochs": None, "max_iters": 6},
        workflow=[["train", 1]],
        custom_hooks=[{"type": "hook:Hook"}],
    )
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=f"{tmp_path}{os.pathsep}{REPO}", **(env or {}))
    return [sys.executable, "-m", "accel_trainer", str(recipe)], env


SIGNAL_WHILE_SAVING = """
import os, signal, time
from accel_trainer import Hook
from accel_trainer.checkpoint import format as checkpoint
from accel_trainer.errors import RecipeError

_install = checkpoint._install

def _signalled_install(tmp, final):
    # The run's last checkpoint is written and hashed: SIGTERM before it is renamed into place.
    if final.name == "iter_6":
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1)
    return _install(tmp, final)

checkpoint._install = _signalled_install

class Hook(Hook):
    pass
"""


def test_a_sigterm_while_the_last_checkpoint_is_written_waits_for_it(tmp_path):
    proc = run_group(*cli(tmp_path, SIGNAL_WHILE_SAVING), timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr[-3000:]
    root = tmp_path / "work" / "checkpoints"
    assert (root / "latest").read_text().strip() == "iter_6" and not list(root.glob(".tmp-*"))
    assert "preempted at epoch 1, iter 6 by SIGTERM" in proc.stdout


BLOCKED_READ = """
import os, signal
from pathlib import Path
from accel_trainer import Hook

class Hook(Hook):
    # After iteration 2: SIGTERM, then a read that never returns (a FIFO nobody writes to).
    def after_train_iter(self, trainer):
        if trainer.iter == 2:
            fifo = Path(__file__).with_name("fifo")
            os.mkfifo(fifo)
            os.kill(os.getpid(), signal.SIGTERM)
            Path(__file__).with_name("blocked").touch()
            fifo.read_bytes()
"""


def test_a_stop_that_cannot_reach_a_step_boundary_ends_after_the_timeout(tmp_path):
    cmd, env = cli(tmp_path, BLOCKED_READ, env={TIMEOUT_ENV: "2"})
    proc = run_group([*cmd, "--set", "checkpoint_config.interval=1"], env, timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr[-3000:]
    assert "SIGTERM: the run has made no progress for 2 s since it (a read that blocks?)" in proc.stderr
    assert (tmp_path / "work" / "checkpoints" / "latest").read_text().strip() == "iter_2"


def test_a_second_sigterm_exits_at_once(tmp_path):
    cmd, env = cli(tmp_path, BLOCKED_READ, env={TIMEOUT_ENV: "600"})
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    blocked = tmp_path / "blocked"
    try:
        while not blocked.exists() and proc.poll() is None:
            time.sleep(0.1)
        time.sleep(2.5)  # later than the same signal delivered twice
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    assert "accel-trainer: second SIGTERM: exiting now, without a checkpoint of this step" in err


@pytest.mark.multiprocess
def test_ctrl_c_of_the_process_under_accelerate_launch_exits_130_through_it(tmp_path):
    # SIGINT reaches the training process only (not the launcher, as a terminal's Ctrl-C would).
    (tmp_path / "kill_hook.py").write_text(KILL_HOOK)
    recipe = write_recipe(tmp_path, custom_hooks=[{"type": "kill_hook:KillAt", "iter": 3, "signal": "SIGINT"}])
    proc = launch(recipe, hooks_dir=tmp_path, processes=1)
    assert proc.returncode == 130, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "CalledProcessError" not in proc.stderr
    assert (tmp_path / "work" / "checkpoints" / "latest").read_text().strip() == "epoch_1_iter_4"
    assert "preempted at epoch 1, iter 4 by SIGINT" in proc.stdout
