"""Export: whole-model and backbone-only safetensors, the latter loadable by plain timm."""

from __future__ import annotations

import pytest
import timm
import torch
from safetensors.torch import load_file

from accel_trainer import Trainer
from accel_trainer.cli import main


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from .helpers.recipes import write_recipe

    tmp = tmp_path_factory.mktemp("export")
    trainer = Trainer.from_recipe(write_recipe(tmp), overrides={"runner.max_epochs": 1, "workflow": [["train", 1]]})
    trainer.fit()
    return trainer, trainer.checkpoints.root / "epoch_1"


def test_backbone_export_loads_in_plain_timm(trained, tmp_path):
    trainer, ckpt = trained
    out = tmp_path / "backbone.safetensors"
    assert main(["export", str(ckpt), "--out", str(out), "--backbone-only"]) == 0
    assert not any(k.startswith("fc.") for k in load_file(out))
    model = timm.create_model("resnet10t", pretrained=True, pretrained_cfg_overlay=dict(file=str(out)), num_classes=0)
    ours = trainer.unwrapped_model.state_dict()
    for key, value in model.state_dict().items():
        assert torch.equal(value, ours[key]), key


def test_whole_model_export_round_trips_through_load_from(trained, tmp_path):
    trainer, ckpt = trained
    out = tmp_path / "model.safetensors"
    assert main(["export", str(ckpt), "--out", str(out)]) == 0
    exported = load_file(out)
    assert exported.keys() == trainer.unwrapped_model.state_dict().keys()
    fresh = Trainer.from_recipe(trainer.recipe.source, overrides={"load_from": str(out)}, work_dir=tmp_path / "w")
    for key, value in fresh.unwrapped_model.state_dict().items():
        assert torch.equal(value, exported[key]), key


def test_export_of_a_missing_checkpoint_exits_2(tmp_path, capsys):
    assert main(["export", str(tmp_path / "nope"), "--out", str(tmp_path / "x.safetensors")]) == 2
    assert "nope" in capsys.readouterr().err


def test_a_checkpoint_of_a_model_of_ones_own_exports_whole_not_as_a_backbone(tmp_path, capsys):
    from .helpers.checkpoints import custom_model_checkpoint

    ckpt = custom_model_checkpoint(tmp_path)
    assert main(["export", str(ckpt), "--out", str(tmp_path / "b.safetensors"), "--backbone-only"]) == 2
    err = capsys.readouterr().err
    assert "the weights do not fit the model" in err and "without --backbone-only" in err
    assert not (tmp_path / "b.safetensors").exists()
    assert main(["export", str(ckpt), "--out", str(tmp_path / "m.onnx")]) == 2
    assert "model=your_model" in capsys.readouterr().err
    assert main(["export", str(ckpt), "--out", str(tmp_path / "m.safetensors")]) == 0


def test_an_out_path_that_is_a_folder_is_refused_before_the_checkpoint_is_read(tmp_path, capsys):
    out = tmp_path / "model.safetensors"
    out.mkdir()
    assert main(["export", str(tmp_path / "nope"), "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip().endswith(f"--out {out}: is a folder; expected a file name")
