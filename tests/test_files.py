"""Writing outputs: whole or not at all, and a folder that cannot take them (read-only, full) is one
error line naming it, before a command does its work; `curves.png` that cannot be written is a warning."""

from __future__ import annotations

import errno
import os

import pytest
from PIL import Image

from accel_trainer import RecipeError
from accel_trainer.cli import main
from accel_trainer.files import atomic_write, writable_folder

from .helpers.filesystem import read_only
from .helpers.recipes import write_recipe


def full_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A recipe trained for one epoch: its work_dir holds checkpoints/epoch_1."""
    tmp = tmp_path_factory.mktemp("run")
    recipe = write_recipe(tmp, runner={"max_epochs": 1}, workflow=[["train", 1]])
    assert main([str(recipe)]) == 0
    return recipe, tmp / "work"


def test_a_read_only_folder_is_refused_by_name(tmp_path):
    with read_only(tmp_path) as folder:
        with pytest.raises(RecipeError, match=rf"^{folder}/sub: not writable \(permission denied\)$"):
            writable_folder(folder / "sub")
        with pytest.raises(RecipeError, match=rf"^{folder}: not writable \(permission denied\)$"):
            writable_folder(folder)
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_during_a_write_names_the_target_and_leaves_it_as_it_was(tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_text("before")
    with (
        pytest.raises(RecipeError, match=rf"^{out}: cannot write: no space left on the device"),
        atomic_write(out) as tmp,
    ):
        tmp.write_text("half")
        full_disk()
    assert out.read_text() == "before" and [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]


@pytest.mark.parametrize("command", ["resume", "eval-only", "predict", "export"])
def test_commands_refuse_a_read_only_output_folder_in_one_line(run, tmp_path, capsys, command):
    recipe, work = run
    ckpt = work / "checkpoints" / "epoch_1"
    out = tmp_path / "out"
    out.mkdir()
    Image.new("RGB", (32, 32)).save(tmp_path / "a.png")
    args = {
        "resume": [str(recipe), "--resume", "--set", "runner.max_epochs=2"],
        "eval-only": [str(recipe), "--eval-only"],
        "predict": ["predict", str(ckpt), str(tmp_path / "a.png"), "--out", str(out / "p.jsonl")],
        "export": ["export", str(ckpt), "--out", str(out / "sub" / "w.safetensors")],
    }[command]
    folder = work if command in ("resume", "eval-only") else out
    before = sorted(p.name for p in folder.iterdir())
    capsys.readouterr()
    with read_only(folder):
        assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not writable (permission denied)" in err[0] and str(folder) in err[0], err
    assert sorted(p.name for p in folder.iterdir()) == before


def test_a_curves_png_that_cannot_be_written_is_a_warning(tmp_path, capsys, monkeypatch):
    figure = pytest.importorskip("matplotlib.figure")
    recipe = write_recipe(tmp_path, runner={"max_epochs": 1}, workflow=[["train", 1]])
    monkeypatch.setattr(figure.Figure, "savefig", full_disk)
    assert main([str(recipe)]) == 0
    out = capsys.readouterr().out
    assert "curves.png: cannot write: no space left on the device" in out
    work = tmp_path / "work"
    assert (work / "checkpoints" / "epoch_1").is_dir() and not list(work.glob("*curves.png*"))
