"""The run lock: one training run per work_dir; a dead run's lock and half-written folders are taken over."""

from __future__ import annotations

import errno
import fcntl
import json
import os
from types import SimpleNamespace

import pytest
from torch import nn

from accel_trainer import Trainer
from accel_trainer.checkpoint.manager import CheckpointManager
from accel_trainer.checkpoint.state import TrainState
from accel_trainer.errors import RecipeError
from accel_trainer.loop.run_lock import RunLock
from accel_trainer.recipe.load import load_recipe

from .helpers.filesystem import read_only
from .helpers.recipes import write_recipe

ONE_PROCESS = SimpleNamespace(is_main_process=True, num_processes=1)


def test_second_run_in_a_work_dir_is_refused_and_a_dead_runs_lock_taken_over(tmp_path, capsys):
    recipe = write_recipe(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    lock = work / ".lock"
    lock.write_text(json.dumps({"pid": 4_000_000, "host": "gone"}))  # a killed run's file, no flock held
    tmp_dead = work / "checkpoints" / ".tmp-iter_7-4000000"
    tmp_live = work / "checkpoints" / f".tmp-iter_9-{os.getpid()}"
    for folder in (tmp_dead, tmp_live):
        folder.mkdir(parents=True)
        (folder / "model.safetensors").write_bytes(b"half")
    Trainer.from_recipe(recipe, overrides={"runner.max_epochs": 1, "workflow": [["train", 1]]}).fit()
    out = capsys.readouterr().out
    assert "taking over the lock of run pid 4000000" in out and "removed " in out
    assert not tmp_dead.exists() and tmp_live.exists()  # a live process's folder is never touched

    with open(lock, "r+") as held:  # another live run holds it
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write(json.dumps({"pid": 12345, "host": "node7"}))
        held.truncate()
        held.flush()
        first_recipe = (work / "recipe.toml").read_text()
        with pytest.raises(RecipeError, match=r"\.lock: work_dir is in use by another run \(pid 12345 on node7\)"):
            Trainer.from_recipe(recipe, overrides={"runner.max_epochs": 2}).fit()
        # Refused before it wrote anything the first run owns.
        assert (work / "recipe.toml").read_text() == first_recipe


def test_the_lock_is_held_from_hold_to_release(tmp_path):
    checkpoints = SimpleNamespace(root=tmp_path / "checkpoints", remove_stale_temporaries=list)
    lock = RunLock(tmp_path, ONE_PROCESS, checkpoints)
    lock.hold()
    with open(tmp_path / ".lock") as other:
        with pytest.raises(BlockingIOError):
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        lock.release()
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free for the next run


def test_a_full_disk_at_the_lock_write_is_one_line_and_holds_nothing(tmp_path, monkeypatch):
    lock = RunLock(tmp_path, ONE_PROCESS, SimpleNamespace(root=tmp_path / "checkpoints", remove_stale_temporaries=list))

    def full_disk(*args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "pwrite", full_disk)
    with pytest.raises(RecipeError, match=rf"^{tmp_path}/\.lock: cannot write: no space left on the device"):
        lock.hold()
    with open(tmp_path / ".lock") as other:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the failed run holds no lock


def test_a_read_only_checkpoint_folder_is_named_and_the_work_dir_lock_let_go(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    work = tmp_path / "work"
    lock = RunLock(work, ONE_PROCESS, SimpleNamespace(root=shared / "checkpoints", remove_stale_temporaries=list))
    with read_only(shared), pytest.raises(RecipeError, match=rf"^{shared}/checkpoints/\.lock: not writable"):
        lock.hold()
    with open(work / ".lock") as own:
        fcntl.flock(own, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the refused run let go of its work_dir


def test_a_finished_run_leaves_no_record_for_the_next_one_to_warn_about(tmp_path, capsys):
    recipe = write_recipe(
        tmp_path, runner={"type": "IterBasedRunner", "max_epochs": None, "max_iters": 2}, workflow=[["train", 1]]
    )
    Trainer.from_recipe(recipe).fit()
    assert (tmp_path / "work" / ".lock").read_bytes() == b""
    capsys.readouterr()
    Trainer.from_recipe(recipe, overrides={"runner.max_iters": 3}).fit()
    assert "taking over the lock" not in capsys.readouterr().out


def test_runs_of_two_work_dirs_sharing_a_checkpoint_folder_are_refused(tmp_path):
    """`checkpoint_config.out_dir` puts `<out_dir>/<work_dir name>/checkpoints` where another run's may be."""

    def run_lock(name: str) -> RunLock:
        work_dir = tmp_path / name / "exp"
        recipe = write_recipe(
            tmp_path,
            name=f"{name}.toml",
            work_dir=str(work_dir),
            checkpoint_config={"out_dir": str(tmp_path / "shared")},
        )
        states = {"model": nn.Linear(1, 1), "train_state": TrainState(by_epoch=True)}
        return RunLock(work_dir, ONE_PROCESS, CheckpointManager(states, recipe=load_recipe(recipe)))

    first, second = run_lock("a"), run_lock("b")
    root = tmp_path / "shared" / "exp" / "checkpoints"
    assert first.checkpoints.root == second.checkpoints.root == root
    first.hold()
    with open(root / ".lock") as other, pytest.raises(BlockingIOError):
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the checkpoint folder itself is locked
    held = json.loads((root / ".lock").read_text())
    first.release()

    with open(root / ".lock", "r+") as lock:  # the first run, alive in another process
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        lock.write(json.dumps({**held, "pid": 12345, "host": "node7"}))
        lock.truncate()
        lock.flush()
        expected = (
            f"{root / '.lock'}: checkpoint folder is in use by another run (pid 12345 on node7 with work_dir "
            f"{tmp_path / 'a' / 'exp'}); wait for it to end or choose another checkpoint_config.out_dir or --work-dir"
        )
        with pytest.raises(RecipeError) as refused:
            second.hold()
        assert str(refused.value) == expected
    with open(tmp_path / "b" / "exp" / ".lock") as own:
        fcntl.flock(own, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the refused run let go of its work_dir


def test_links_in_a_work_dir_are_never_written_through(tmp_path):
    """A `.lock`, `recipe.toml` or log that is a symbolic link: the file it points to stays as it was."""
    victims = {name: tmp_path / f"victim.{name}" for name in ("lock", "recipe", "log")}
    for victim in victims.values():
        victim.write_text("keep")
    work = tmp_path / "work"
    work.mkdir()
    (work / "recipe.toml").symlink_to(victims["recipe"])
    trainer = Trainer.from_recipe(write_recipe(tmp_path), overrides={"runner.max_epochs": 1})
    (work / f"{trainer.timestamp}.log.json").symlink_to(victims["log"])
    with pytest.raises(RecipeError, match=r"\.log\.json: is a symbolic link; remove it"):
        trainer.fit()  # refused at the first log line, after the recipe was written
    assert not (work / "recipe.toml").is_symlink() and "[model]" in (work / "recipe.toml").read_text()

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / ".lock").symlink_to(victims["lock"])
    lock = RunLock(
        elsewhere, ONE_PROCESS, SimpleNamespace(root=elsewhere / "checkpoints", remove_stale_temporaries=list)
    )
    with pytest.raises(RecipeError, match=r"\.lock: is a symbolic link; the run lock must be a plain file"):
        lock.hold()
    assert all(victim.read_text() == "keep" for victim in victims.values())
