"""Failures a cluster run meets: non-finite losses, lying checkpoint files, a second run in the same
work_dir, dead processes' temporary folders, a full disk, engines we do not drive, absurd configs."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from accel_trainer import Trainer, checkpoint, cli
from accel_trainer.errors import RecipeError
from accel_trainer.hooks.checkpoint import SaveBestHook
from accel_trainer.hooks.step_guard import NonFiniteError

from .helpers import REPO
from .helpers.recipes import write_recipe

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
    assert trainer.checkpointer.last == "iter_2"


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
    saved = checkpoint.load_checkpoint(trainer.checkpointer.root / "iter_8").extra_tensors["nan_guard"]
    assert float(saved["lr_factor"]) == 0.25 and int(saved["rollbacks"]) == 1

    trainer = Trainer.from_recipe(tiny_recipe, overrides=overrides)
    shutil.rmtree(trainer.checkpointer.root)
    poison(trainer, {1})
    with pytest.raises(NonFiniteError, match="no resumable checkpoint"):
        trainer.fit()


def test_non_finite_weights_are_never_written_and_nan_is_never_best(tiny_recipe):
    trainer = Trainer.from_recipe(tiny_recipe)
    with torch.no_grad():
        next(trainer.unwrapped_model.parameters()).fill_(float("nan"))
    with pytest.raises(RecipeError, match="iter_1: not written: 1 of .* model tensors are not finite"):
        trainer.checkpointer.save("iter_1")
    assert not (trainer.checkpointer.root / "iter_1").exists()
    hook = SaveBestHook("top1", "greater", [], [])
    assert not hook._better(float("nan"), None) and not hook._better(float("nan"), 0.3)


def save(root: Path, name: str, iter: int, optimizer: bool = True) -> Path:
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1) if optimizer else None
    return checkpoint.save_checkpoint(
        root, name, model_state=model.state_dict(), trainer_state={"iter": iter}, recipe_text="", optimizer=opt
    )


def test_auto_resume_skips_weights_only_and_damaged_checkpoints(tmp_path, caplog):
    good = save(tmp_path, "epoch_1", 8)
    save(tmp_path, "best_top1_epoch_2", 16, optimizer=False)
    damaged = save(tmp_path, "epoch_2", 16)
    (damaged / "model.safetensors").write_bytes(b"garbage")
    with caplog.at_level(logging.WARNING):
        assert checkpoint.find_resumable(tmp_path, need_optimizer=True) == good
    assert "best_top1_epoch_2: weights only (no optimizer state)" in caplog.text
    assert "epoch_2" in caplog.text


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """One short run's work_dir, with iter_2 (resumable) in it."""
    tmp = tmp_path_factory.mktemp("trained")
    trainer = Trainer.from_recipe(write_recipe(tmp), overrides={**ONE_EPOCH, "runner.max_epochs": 1})
    trainer.fit()
    return tmp


def rewrite(folder: Path, name: str, text: str) -> None:
    """Change a file and its manifest digest, so the folder still verifies: the file lies, not the disk."""
    (folder / name).write_text(text)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["sha256"][name] = hashlib.sha256(text.encode()).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    "file, edit, message",
    [
        ("trainer_state.json", lambda s: {k: v for k, v in s.items() if k != "iter"}, "field 'iter' is missing"),
        ("trainer_state.json", lambda s: {**s, "epoch": "1"}, "field 'epoch' = '1': expected int"),
        ("trainer_state.json", lambda s: [s], "expected a JSON object"),
        (
            "optimizer.json",
            lambda s: {k: v for k, v in s.items() if k != "param_groups"},
            "field 'param_groups' is missing",
        ),
        ("optimizer.json", lambda s: {**s, "param_groups": [{"params": ["a"]}]}, r"field 'param_groups\[0\].params'"),
    ],
)
def test_crafted_state_files_exit_2_naming_file_and_field(tmp_path, trained, capsys, file, edit, message):
    work = tmp_path / "work"
    shutil.copytree(trained / "work", work)
    folder = work / "checkpoints" / "iter_2"
    rewrite(folder, file, json.dumps(edit(json.loads((folder / file).read_text()))))
    code = cli.main([str(write_recipe(tmp_path)), "--resume", str(folder), "--set", "runner.max_epochs=1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f"accel-trainer: error: {folder / file}: ") and re.search(message, err[0]), err[0]


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


def test_disk_full_while_saving_exits_in_one_line_and_keeps_every_checkpoint(tmp_path, monkeypatch, capsys):
    recipe = write_recipe(tmp_path)
    save_file = checkpoint.save_file

    def disk_full(tensors, path, metadata=None):
        if "iter_4" in str(path):
            Path(path).write_bytes(b"partial")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return save_file(tensors, path, metadata=metadata)

    monkeypatch.setattr(checkpoint, "save_file", disk_full)
    root = tmp_path / "work" / "checkpoints"
    code = cli.main(
        [
            str(recipe),
            "--set",
            "runner.max_epochs=1",
            "checkpoint_config.by_epoch=false",
            "checkpoint_config.interval=2",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1
    assert f"{root / 'iter_4'}: cannot write the checkpoint (No space left on device)" in err[0]
    assert sorted(p.name for p in root.iterdir()) == ["iter_2", "latest"]
    assert (root / "latest").read_text().strip() == "iter_2"
    checkpoint.verify_checkpoint(root / "iter_2")


@pytest.mark.parametrize("var, name", [("ACCELERATE_USE_FSDP", "FSDP"), ("ACCELERATE_USE_DEEPSPEED", "DeepSpeed")])
def test_unsupported_engines_stop_at_start_in_one_line(tiny_recipe, monkeypatch, capsys, var, name):
    monkeypatch.setenv(var, "true")
    assert cli.main([str(tiny_recipe)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"asks for {name} ({var})" in err[0] and "supported: " in err[0]


def test_fsdp_launch_config_is_refused_through_accelerate_launch(tmp_path, tiny_recipe):
    config = tmp_path / "fsdp.yaml"
    config.write_text(
        "compute_environment: LOCAL_MACHINE\ndistributed_type: FSDP\nnum_processes: 1\n"
        "num_machines: 1\nmachine_rank: 0\nmixed_precision: 'no'\nuse_cpu: true\n"
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--config_file",
            str(config),
            "-m",
            "accel_trainer",
            str(tiny_recipe),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=dict(os.environ, ACCELERATE_USE_CPU="1"),
        timeout=300,
    )
    assert proc.returncode != 0
    assert "accel-trainer: error: the accelerate launch config asks for FSDP" in proc.stderr
    assert "Traceback" not in proc.stderr.split("accel-trainer: error")[0]


@pytest.mark.parametrize(
    "text, message",
    [
        ("lr = " + "-" * 100_000 + "1\n", "nested too deeply"),
        ("optimizer = dict(type='SGD', lr=1e308 * 10)\n", "not a finite number"),
        ("optimizer = dict(type='SGD', lr=1e999)\n", "not finite"),
    ],
)
def test_import_mmcv_refuses_absurd_literals(tmp_path, capsys, text, message):
    config = tmp_path / "absurd.py"
    config.write_text(text)
    out = tmp_path / "out.toml"
    assert cli.main(["import-mmcv", str(config), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(config) in err[0] and message in err[0]
    assert not out.exists()
