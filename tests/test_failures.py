"""Failures a cluster run meets: lying checkpoint files, engines we do not drive, absurd configs.

Non-finite losses are in test_step_guard.py, a second run in one work_dir in test_run_lock.py, a
full disk and non-finite weights in test_checkpoint_manager.py."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from accel_trainer import Trainer, cli

from .helpers import REPO
from .helpers.recipes import write_recipe

ONE_EPOCH = {
    "runner.max_epochs": 1,
    "workflow": [["train", 1]],
    "checkpoint_config": {"by_epoch": False, "interval": 2},
}


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


def test_a_run_stopped_by_its_data_before_training_leaves_no_log(tmp_path, capsys):
    for split in ("train", "val"):
        (tmp_path / split / "cat").mkdir(parents=True)  # a class folder without images
    data = {"type": "imagefolder", "train": {"root": str(tmp_path / "train")}, "val": {"root": str(tmp_path / "val")}}
    assert cli.main([str(write_recipe(tmp_path, data=data))]) == 2
    assert "data.train.root" in capsys.readouterr().err
    assert list((tmp_path / "work").glob("*.log")) == []


def test_only_a_log_without_warnings_is_discarded(tmp_path):
    from accel_trainer.log import discard_unstarted_log, setup_logging

    quiet, warned = tmp_path / "quiet.log", tmp_path / "warned.log"
    log = setup_logging(quiet, "INFO", is_main=True)
    log.info("accelerate: 1 process")
    discard_unstarted_log()
    assert not quiet.exists()
    log = setup_logging(warned, "INFO", is_main=True)
    log.warning("something to keep")
    discard_unstarted_log()
    assert "something to keep" in warned.read_text()
