"""The run lock: one training run per work_dir; a dead run's lock and half-written folders are taken over."""

from __future__ import annotations

import errno
import fcntl
import json
import os
from types import SimpleNamespace

import pytest

from accel_trainer import Trainer
from accel_trainer.errors import RecipeError
from accel_trainer.loop.run_lock import RunLock

from .helpers.recipes import write_recipe


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
        held.flush()
        first_recipe = (work / "recipe.toml").read_text()
        with pytest.raises(RecipeError, match=r"\.lock: work_dir is in use by another run \(pid 12345 on node7\)"):
            Trainer.from_recipe(recipe, overrides={"runner.max_epochs": 2}).fit()
        # Refused before it wrote anything the first run owns.
        assert (work / "recipe.toml").read_text() == first_recipe


def test_the_lock_is_held_from_hold_to_release(tmp_path):
    accelerator = SimpleNamespace(is_main_process=True, num_processes=1)
    lock = RunLock(tmp_path, accelerator, SimpleNamespace(remove_stale_temporaries=list))
    lock.hold()
    with open(tmp_path / ".lock") as other:
        with pytest.raises(BlockingIOError):
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        lock.release()
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free for the next run


def test_a_full_disk_at_the_lock_write_is_one_line_and_holds_nothing(tmp_path, monkeypatch):
    accelerator = SimpleNamespace(is_main_process=True, num_processes=1)
    lock = RunLock(tmp_path, accelerator, SimpleNamespace(remove_stale_temporaries=list))

    def full_disk(*args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "pwrite", full_disk)
    with pytest.raises(RecipeError, match=rf"^{tmp_path}/\.lock: cannot write: no space left on the device"):
        lock.hold()
    with open(tmp_path / ".lock") as other:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the failed run holds no lock


def test_a_finished_run_leaves_no_record_for_the_next_one_to_warn_about(tmp_path, capsys):
    recipe = write_recipe(
        tmp_path, runner={"type": "IterBasedRunner", "max_epochs": None, "max_iters": 2}, workflow=[["train", 1]]
    )
    Trainer.from_recipe(recipe).fit()
    assert (tmp_path / "work" / ".lock").read_bytes() == b""
    capsys.readouterr()
    Trainer.from_recipe(recipe, overrides={"runner.max_iters": 3}).fit()
    assert "taking over the lock" not in capsys.readouterr().out
