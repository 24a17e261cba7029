"""Checkpoints: exact round trips, crash safety, tamper detection, and no code run on load."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from accel_trainer.checkpoint import format as checkpoint
from accel_trainer.checkpoint.format import CheckpointError, candidates, load_checkpoint, save_checkpoint

from .helpers.checkpoints import flip_last_byte, newest_verified, tiny_model


def train(model: torch.nn.Module, optimizer: torch.optim.Optimizer, steps: int, seed: int = 1) -> None:
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        optimizer.zero_grad()
        model(torch.randn(6, 4, generator=gen)).square().mean().backward()
        optimizer.step()


def save(root, name, model, optimizer=None, **kw):
    return save_checkpoint(
        root,
        name,
        model_state=model.state_dict(),
        trainer_state={"iter": int(name.split("_")[-1])},
        recipe_text="[model]\nbackbone = 'x'\n",
        optimizer=optimizer,
        **kw,
    )


OPTIMIZERS = {
    "sgd": lambda params, lr: torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True, weight_decay=1e-4),
    "adamw": lambda params, lr: torch.optim.AdamW(params, lr=lr, betas=(0.8, 0.95), weight_decay=0.05),
}


@pytest.mark.parametrize("kind", OPTIMIZERS)
def test_round_trip_gives_bit_identical_next_step(tmp_path, kind):
    model = tiny_model()
    optimizer = OPTIMIZERS[kind](model.parameters(), 0.01)
    train(model, optimizer, 3)
    path = save(tmp_path, "iter_3", model, optimizer)

    fresh = tiny_model()
    fresh_opt = OPTIMIZERS[kind](fresh.parameters(), 0.5)  # different lr: the saved hyperparameters must win
    loaded = load_checkpoint(path)
    fresh.load_state_dict(loaded.model_state)
    fresh_opt.load_state_dict(loaded.optimizer_state)

    assert loaded.trainer_state == {"iter": 3}
    assert loaded.recipe_text == "[model]\nbackbone = 'x'\n"
    assert fresh_opt.param_groups[0] == optimizer.param_groups[0] | {"params": fresh_opt.param_groups[0]["params"]}
    for key, value in model.state_dict().items():
        assert loaded.model_state[key].dtype == value.dtype and torch.equal(loaded.model_state[key], value), key
    for i, state in optimizer.state_dict()["state"].items():
        for name, value in state.items():
            restored = loaded.optimizer_state["state"][i][name]
            assert type(restored) is type(value) and (not torch.is_tensor(value) or restored.dtype == value.dtype)
    train(model, optimizer, 2, seed=7)
    train(fresh, fresh_opt, 2, seed=7)
    for a, b in zip(model.parameters(), fresh.parameters()):
        assert torch.equal(a, b)


def test_shared_views_and_extra_tensors_round_trip(tmp_path):
    base = torch.arange(10, dtype=torch.int64)
    state = {
        "a": base,
        "b": base,
        "c": base[2:5],
        "scalar": torch.tensor(2.5, dtype=torch.float64),
        "t": base.view(2, 5).t(),
    }
    ema = {"w": torch.ones(2, dtype=torch.bfloat16)}
    path = save_checkpoint(
        tmp_path,
        "epoch_1",
        model_state=state,
        trainer_state={"best": {"value": float("nan")}},
        recipe_text="",
        extra_tensors={"ema": ema},
        rng=False,
    )
    loaded = load_checkpoint(path)
    assert set(loaded.model_state) == set(state)
    for key, value in state.items():
        assert loaded.model_state[key].dtype == value.dtype and torch.equal(loaded.model_state[key], value), key
    assert (
        torch.equal(loaded.extra_tensors["ema"]["w"], ema["w"])
        and loaded.extra_tensors["ema"]["w"].dtype == torch.bfloat16
    )
    assert loaded.optimizer_state is None and loaded.rng == ({}, {})
    assert np.isnan(loaded.trainer_state["best"]["value"])


def draws() -> tuple:
    return random.random(), random.gauss(0, 1), np.random.rand(), np.random.randn(), torch.rand(3)


def test_rng_round_trip_through_checkpoint(tmp_path):
    random.gauss(0, 1), np.random.randn()  # leave cached gaussians in both generators
    path = save(tmp_path, "iter_1", tiny_model())
    expected = draws()
    draws()
    checkpoint.restore_rng_state(*load_checkpoint(path).rng)
    got = draws()
    assert got[:4] == expected[:4] and torch.equal(got[4], expected[4])


def test_capture_restore_in_memory():
    state = checkpoint.capture_rng_state()
    expected = draws()
    checkpoint.restore_rng_state(*state)
    got = draws()
    assert got[:4] == expected[:4] and torch.equal(got[4], expected[4])


def checkpoint_like_folders(root) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


@pytest.mark.parametrize("name", ["epoch_2", "epoch_1"])  # a new checkpoint, and a re-save over the existing one
def test_crash_mid_save_keeps_previous_checkpoint(tmp_path, monkeypatch, name):
    model = tiny_model()
    optimizer = OPTIMIZERS["sgd"](model.parameters(), 0.1)
    train(model, optimizer, 1)
    first = save(tmp_path, "epoch_1", model, optimizer)
    before = {p.name: p.read_bytes() for p in first.iterdir()}

    def crash(tensors, path, metadata=None):
        if str(path).endswith("optimizer.safetensors"):
            Path(path).write_bytes(b"partial")
            raise OSError("disk full")
        return save_file(tensors, path, metadata=metadata)

    monkeypatch.setattr(checkpoint, "save_file", crash)
    monkeypatch.setattr(checkpoint.shutil, "rmtree", lambda *a, **k: None)  # like SIGKILL: no cleanup runs
    train(model, optimizer, 1)
    with pytest.raises(CheckpointError, match="disk full"):
        save(tmp_path, name, model, optimizer)
    monkeypatch.undo()

    assert checkpoint_like_folders(tmp_path) == ["epoch_1"]
    assert any(p.name.startswith(".tmp-") for p in tmp_path.iterdir())
    assert (tmp_path / "latest").read_text().strip() == "epoch_1"
    assert {p.name: p.read_bytes() for p in first.iterdir()} == before
    assert newest_verified(tmp_path) == first


def test_crash_before_latest_update_keeps_latest(tmp_path, monkeypatch):
    model = tiny_model()
    first = save(tmp_path, "iter_1", model)
    monkeypatch.setattr(checkpoint.os, "replace", lambda *a: (_ for _ in ()).throw(OSError("killed")))
    with pytest.raises(CheckpointError, match="killed"):
        save(tmp_path, "iter_2", model)
    monkeypatch.undo()
    assert (tmp_path / "latest").read_text().strip() == "iter_1"
    load_checkpoint(tmp_path / "iter_2")  # complete: the folder was renamed in before `latest` moved
    assert newest_verified(tmp_path) == first


@pytest.mark.parametrize("exchange", [True, False])  # renameat2 swap, and the rename-aside fallback
def test_resave_replaces_existing_checkpoint(tmp_path, monkeypatch, exchange):
    if not exchange:
        monkeypatch.setattr(checkpoint, "_exchange", lambda a, b: False)
    model = tiny_model()
    save(tmp_path, "epoch_1", model)
    with torch.no_grad():
        model[0].weight.add_(1)
    path = save(tmp_path, "epoch_1", model)
    assert torch.equal(load_checkpoint(path).model_state["0.weight"], model[0].weight)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch_1", "latest"]


DAMAGE = {
    "flip": flip_last_byte,
    "truncate": lambda path: path.write_bytes(path.read_bytes()[: path.stat().st_size // 2]),
    "delete": lambda path: path.unlink(),
}


@pytest.mark.parametrize(
    "how,file",
    [
        ("flip", "model.safetensors"),
        ("truncate", "optimizer.safetensors"),
        ("flip", "trainer_state.json"),
        ("delete", "rng.safetensors"),
        ("delete", "manifest.json"),
    ],
)
def test_damaged_checkpoint_is_rejected_and_skipped(tmp_path, how, file):
    model = tiny_model()
    optimizer = OPTIMIZERS["adamw"](model.parameters(), 0.01)
    train(model, optimizer, 1)
    good = save(tmp_path, "iter_1", model, optimizer)
    bad = save(tmp_path, "iter_2", model, optimizer)
    DAMAGE[how](bad / file)

    with pytest.raises(CheckpointError, match=file):
        load_checkpoint(bad)
    assert newest_verified(tmp_path) == good


def test_candidates_are_ordered_by_iteration_without_temp_folders(tmp_path):
    model = tiny_model()
    for n in (9, 10, 2):
        save(tmp_path, f"iter_{n}", model)
    (tmp_path / "latest").unlink()
    (tmp_path / ".tmp-iter_11-1").mkdir()
    assert candidates(tmp_path) == [tmp_path / f"iter_{n}" for n in (10, 9, 2)]
    assert candidates(tmp_path / "missing") == []


def test_prune_keeps_newest_and_protected_and_remove_takes_one(tmp_path):
    for name in ("epoch_1", "epoch_2", "epoch_3", "epoch_9", "epoch_10", "best_top1_epoch_2", "iter_5"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "manifest.json").write_text(json.dumps({"sha256": {}}))
    checkpoint.prune_checkpoints(tmp_path, "epoch", 0, protect=set())
    assert len(list(tmp_path.iterdir())) == 7
    checkpoint.prune_checkpoints(tmp_path, "epoch", 2, protect={"epoch_1", "best_top1_epoch_2"})
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "best_top1_epoch_2",
        "epoch_1",
        "epoch_10",
        "epoch_9",
        "iter_5",
    ]
    checkpoint.remove_checkpoint(tmp_path, "best_top1_epoch_2")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch_1", "epoch_10", "epoch_9", "iter_5"]


def test_removing_and_pruning_never_reach_outside_the_checkpoint_root(tmp_path):
    root, victim = tmp_path / "checkpoints", tmp_path / "victim"
    victim.mkdir()
    (victim / "data.txt").write_text("keep")
    for name in ("iter_1", "iter_2", "iter_3"):
        (root / name).mkdir(parents=True)
    for name in ("../victim", str(victim), "latest", ".hidden", "iter_1/.."):
        with pytest.raises(CheckpointError, match="is not a checkpoint folder of this root; not touching it"):
            checkpoint.remove_checkpoint(root, name)
    (root / "iter_0").symlink_to(victim, target_is_directory=True)
    checkpoint.prune_checkpoints(root, "iter", 2, protect=set())  # iter_1 goes, and the link iter_0 (only the link)
    (root / "best_top1_iter_2").symlink_to(victim, target_is_directory=True)
    checkpoint.remove_checkpoint(root, "best_top1_iter_2")
    assert sorted(p.name for p in root.iterdir()) == ["iter_2", "iter_3"]
    assert (victim / "data.txt").read_text() == "keep"
