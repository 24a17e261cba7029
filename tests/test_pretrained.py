"""`[model] pretrained`: hub weights by tag through timm's loader and a planted huggingface_hub cache
(no network), local files, and the one-line errors for weights that cannot be had or do not fit."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import timm
import torch
from huggingface_hub import constants as hf_constants
from safetensors.torch import load_file, save_file

from accel_trainer.cli import main
from accel_trainer.errors import RecipeError
from accel_trainer.recipe.model_section import ModelCfg
from accel_trainer.tasks.detector import build_detector

from .helpers import REPO
from .helpers.recipes import TINY_DET, write_recipe

REPO_ID = "timm/resnet10t.c3_in1k"  # timm's default pretrained tag of resnet10t


def plant_hub_weights(hub_cache: Path, repo_id: str, seed: int = 7) -> dict[str, torch.Tensor]:
    """Write a resnet10t state dict where huggingface_hub keeps `repo_id`'s `model.safetensors`."""
    torch.manual_seed(seed)
    tensors = {k: v.clone() for k, v in timm.create_model("resnet10t").state_dict().items()}
    repo = hub_cache / f"models--{repo_id.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    save_file(tensors, str(snapshot / "model.safetensors"))
    return tensors


@pytest.fixture
def offline_hub(tmp_path, monkeypatch) -> Path:
    """An empty hub cache, huggingface_hub offline (its constants are read once, at import)."""
    cache = tmp_path / "hf" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    return cache


def test_pretrained_true_trains_from_the_planted_hub_weights(tmp_path):
    """The CLI in a fresh process with HF_HOME + HF_HUB_OFFLINE, as a user runs it: the frozen trunk
    of a detector trained for an epoch holds exactly the planted tensors."""
    planted = plant_hub_weights(tmp_path / "hf" / "hub", REPO_ID)
    recipe = write_recipe(tmp_path, TINY_DET, name="det.toml", freeze={"modules": ["backbone"], "epochs": 1})
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    env.pop("HF_HUB_CACHE", None)
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "accel_trainer",
            str(recipe),
            "--set",
            "model.pretrained=true",
            'workflow=[["train", 1]]',
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    log = run.stdout + run.stderr
    assert f"pretrained weights resnet10t.c3_in1k (hub repo {REPO_ID}): {len(planted) - 2} tensors loaded" in log
    assert "2 unexpected" in log and "fc.weight" in log  # the classifier, named as dropped
    trained = load_file(str(tmp_path / "work" / "checkpoints" / "epoch_1" / "model.safetensors"))
    body = {k[len("backbone.body.") :]: v for k, v in trained.items() if k.startswith("backbone.body.")}
    assert body and set(body) == set(planted) - {"fc.weight", "fc.bias"}
    for key, value in body.items():
        assert torch.equal(value, planted[key]), key


def test_tagged_name_loads_into_a_classifier_and_names_the_head(offline_hub, caplog):
    from accel_trainer import load_recipe
    from accel_trainer.tasks.classification import ClassificationTask

    planted = plant_hub_weights(offline_hub, REPO_ID)
    recipe_path = write_recipe(offline_hub.parent)
    recipe = load_recipe(recipe_path, {"model.pretrained": "resnet10t.c3_in1k"})
    with caplog.at_level(logging.INFO, logger="accel_trainer"):
        model = ClassificationTask(recipe).build_model()
    assert torch.equal(model.conv1[0].weight, planted["conv1.0.weight"])
    assert torch.equal(model.layer4[0].bn1.running_var, planted["layer4.0.bn1.running_var"])
    assert model.fc.weight.shape == (4, 512)
    assert "2 shape mismatches; not loaded:" in caplog.text and "fc.weight (1000, 512) vs model (4, 512)" in caplog.text


def test_offline_and_not_cached_is_one_line_before_anything_is_built(offline_hub, tmp_path, capsys):
    recipe = write_recipe(tmp_path)
    assert main([str(recipe), "--set", "model.pretrained=true"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("accel-trainer: error: model.pretrained: resnet10t.c3_in1k")
    assert str(offline_hub) in err and "network" in err and "local .safetensors" in err
    assert not (tmp_path / "work").exists()


class CountingHub:
    """A hub endpoint that accepts connections and closes each without an answer: a network that
    does not work, where every request for a repo file (`/resolve/`) is counted."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        self.file_requests = 0
        self.sleeps: list[float] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:  # closed
                return
            with conn:
                self.file_requests += b"/resolve/" in conn.recv(4096).split(b"\r\n")[0]


@pytest.fixture
def unreachable_hub(tmp_path, monkeypatch):
    """An empty hub cache, huggingface_hub online (no HF_HUB_OFFLINE) at an endpoint that never
    answers; its retry sleeps are recorded instead of slept."""
    cache = tmp_path / "hf" / "hub"
    cache.mkdir(parents=True)
    hub = CountingHub()
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hf_constants, "ENDPOINT", hub.url)
    monkeypatch.setattr(
        hf_constants, "HUGGINGFACE_CO_URL_TEMPLATE", hub.url + "/{repo_id}/resolve/{revision}/{filename}"
    )
    monkeypatch.setattr(time, "sleep", hub.sleeps.append)
    yield cache, hub
    hub.server.close()


def test_an_unreachable_hub_fails_at_once_with_one_line(unreachable_hub, tmp_path, capsys):
    # Online but no network: one request, no retries (huggingface_hub's backoff took about a minute).
    cache, hub = unreachable_hub
    recipe = write_recipe(tmp_path)
    assert main([str(recipe), "--set", "model.pretrained=true"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(
        f"accel-trainer: error: model.pretrained: cannot get resnet10t.c3_in1k from the hub into {cache}"
    )
    assert "\n" not in err and err.endswith("download it once with network access or give a local weights file")
    assert (hub.file_requests, hub.sleeps) == (1, [])


def test_cached_weights_are_read_without_asking_the_hub(unreachable_hub):
    cache, hub = unreachable_hub
    planted = plant_hub_weights(cache, REPO_ID)
    model = build_detector(ModelCfg(task="detection", backbone="resnet10t", num_classes=4, pretrained=True))
    assert torch.equal(model.backbone.body.conv1[0].weight, planted["conv1.0.weight"])
    assert (hub.file_requests, hub.sleeps) == (0, [])


def test_hub_prefix_and_tag_for_another_architecture(offline_hub):
    plant_hub_weights(offline_hub, "timm/resnet10t.c3_in1k")
    with pytest.raises(RecipeError, match="is for resnet18, but model.backbone = 'resnet10t'"):
        build_detector(ModelCfg(task="detection", backbone="resnet10t", num_classes=4, pretrained="resnet18.a1_in1k"))
    model = build_detector(
        ModelCfg(task="detection", backbone="resnet10t", num_classes=4, pretrained="hf-hub:timm/resnet10t.c3_in1k")
    )
    assert model.backbone.body.conv1[0].weight.abs().sum() > 0


def test_weights_of_another_architecture_exit_2_naming_the_file(tmp_path, capsys):
    weights = tmp_path / "resnet18.safetensors"
    save_file(timm.create_model("resnet18").state_dict(), str(weights))
    recipe = write_recipe(tmp_path)
    assert main([str(recipe), "--set", f'model.pretrained="{weights}"']) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(weights) in err and "another architecture" in err and "conv1.0.weight" in err


class Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_pickle_payload_is_refused_with_exit_2(tmp_path, capsys):
    weights = tmp_path / "evil.pth"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "meta": Payload()}, weights)
    recipe = write_recipe(tmp_path)
    assert main([str(recipe), "--set", f'model.pretrained="{weights}"']) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(weights) in err and "refused" in err
