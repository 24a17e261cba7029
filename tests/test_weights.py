"""Weights files: every format loads, mismatches are reported, and no pickle runs code."""

from __future__ import annotations

import argparse
import logging
import os
import pickle

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from accel_trainer.checkpoint.format import CheckpointError, save_checkpoint
from accel_trainer.checkpoint.weights import fit_weights, load_weights
from accel_trainer.errors import RecipeError

from .helpers.checkpoints import flip_last_byte, tiny_model


class Malicious:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_malicious_pickle_is_refused_without_running_it(tmp_path, writer):
    marker = tmp_path / "pwned"
    path = tmp_path / "weights.pth"
    payload = {"state_dict": {"w": torch.zeros(1)}, "x": Malicious(marker)}
    if writer == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(RecipeError, match="weights.pth.*not a plain weights file"):
        load_weights(path)
    assert not marker.exists()


def test_numpy_metadata_loads_but_code_inside_numpy_is_still_refused(tmp_path):
    state = tiny_model().state_dict()
    meta = {
        "epoch": 12,
        "CLASSES": ("a", "b"),
        "best_score": np.float64(0.374),
        "anchors": np.zeros((2, 4), np.float32),
    }
    torch.save({"meta": meta, "state_dict": state}, tmp_path / "mmdet_style.pth")
    loaded = load_weights(tmp_path / "mmdet_style.pth")
    assert set(loaded) == set(state) and all(torch.equal(loaded[k], v) for k, v in state.items())
    marker = tmp_path / "pwned"
    hidden = np.empty(1, dtype=object)
    hidden[0] = Malicious(marker)  # an object array: its items go through the same restricted unpickler
    torch.save({"meta": {"x": hidden}, "state_dict": state}, tmp_path / "hidden.pth")
    with pytest.raises(RecipeError, match="hidden.pth.*not a plain weights file"):
        load_weights(tmp_path / "hidden.pth")
    assert not marker.exists()


def test_timm_training_checkpoint_loads(tmp_path):
    """timm's train.py writes `model_best.pth.tar` with the args as an argparse.Namespace."""
    state = tiny_model().state_dict()
    args = argparse.Namespace(model="resnest50d", lr=0.1, mixup=0.2)
    ema = {k: v + 1 for k, v in state.items()}
    torch.save(
        {"epoch": 9, "arch": "resnest50d", "state_dict": state, "state_dict_ema": ema, "args": args, "metric": 81.2},
        tmp_path / "model_best.pth.tar",
    )
    loaded = load_weights(tmp_path / "model_best.pth.tar")
    assert all(torch.equal(loaded[k], v) for k, v in state.items()) and set(loaded) == set(state)
    torch.save(state, tmp_path / "weights.tar")
    with pytest.raises(RecipeError, match="unsupported weights file"):
        load_weights(tmp_path / "weights.tar")


def test_load_weights_formats(tmp_path):
    state = tiny_model().state_dict()
    save_file(state, tmp_path / "w.safetensors")
    torch.save(state, tmp_path / "w.pth")
    torch.save(
        {"state_dict": {f"module.{k}": v for k, v in state.items()}, "meta": {"epoch": 3}}, tmp_path / "wrapped.pt"
    )
    folder = save_checkpoint(tmp_path / "ckpts", "epoch_1", model_state=state, trainer_state={}, recipe_text="")
    for source in ("w.safetensors", "w.pth", "wrapped.pt", "ckpts/epoch_1"):
        loaded = load_weights(tmp_path / source)
        assert set(loaded) == set(state), source
        assert all(torch.equal(loaded[k], v) and loaded[k].dtype == v.dtype for k, v in state.items()), source
    flip_last_byte(folder / "model.safetensors")
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_weights(folder)
    with pytest.raises(RecipeError, match="unsupported"):
        load_weights(tmp_path / "ckpts" / "latest")


def test_fit_weights_reports_and_revises_keys(caplog):
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 3))
    other = {f"net.{k}": v + 1 for k, v in model.state_dict().items()}
    other["net.1.weight"] = torch.zeros(5, 8)
    other["net.extra"] = torch.zeros(1)
    with caplog.at_level(logging.WARNING):
        report = fit_weights(model, other, source="other.pth", revise_keys=[(r"^net\.", "")])
    assert report["unexpected"] == ["extra"] and report["missing"] == []
    assert report["shape mismatch"] == ["1.weight (5, 8) vs model (3, 8)"]
    assert "other.pth" in caplog.text and "shape mismatch" in caplog.text
    assert torch.equal(model[0].weight, other["net.0.weight"])
    with pytest.raises(RecipeError, match="other.pth: weights do not fit the model"):
        fit_weights(model, other, source="other.pth", revise_keys=[(r"^net\.", "")], strict=True)
