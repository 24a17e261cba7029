"""The checkpoint manager: when it saves, what it keeps, where each part goes, what resumes, and
that a checkpoint of the previous release (tests/fixtures/checkpoint_b68f241) resumes exactly."""

from __future__ import annotations

import errno
import json
import logging
import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes
from torch import nn

from accel_trainer import Hook, Trainer, cli
from accel_trainer.checkpoint import format as checkpoint
from accel_trainer.checkpoint.format import CheckpointError
from accel_trainer.checkpoint.manager import CheckpointManager
from accel_trainer.checkpoint.state import RNGState, TrainState
from accel_trainer.errors import RecipeError
from accel_trainer.hooks.base import PRIORITIES
from accel_trainer.hooks.save_best import SaveBestHook
from accel_trainer.loop.step_guard import STEM, StepGuard
from accel_trainer.recipe.load import load_recipe

from .helpers.checkpoints import flip_last_byte, replace_verified
from .helpers.recipes import write_recipe


class Part:
    """A fake stateful part: gives `state`, keeps what a resume hands back."""

    def __init__(self, state: dict | None = None) -> None:
        self.state = state if state is not None else {}
        self.loaded: dict | None = None

    def state_dict(self) -> dict:
        return self.state

    def load_state_dict(self, state: dict) -> None:
        self.loaded = state


def manager(tmp_path: Path, overrides: dict | None = None, **parts) -> CheckpointManager:
    """A manager of fake parts under `tmp_path/work`: a model of one tensor, an iteration runner's TrainState."""
    recipe = load_recipe(write_recipe(tmp_path), overrides)
    states = {"model": Part({"w": torch.arange(4.0)}), "train_state": TrainState(by_epoch=False), **parts}
    return CheckpointManager(states, recipe=recipe, info=lambda: {"classes": {"names": ["a", "b"]}})


def names(root: Path) -> set[str]:
    return {p.name for p in root.iterdir() if p.is_dir()}


def test_each_part_goes_where_the_layout_says_and_comes_back_on_resume(tmp_path):
    rng = Part({"tensors": {"torch": torch.tensor([1, 2], dtype=torch.uint8)}, "meta": {"seed": 7}})
    ckpts = manager(tmp_path, rng=rng, counter=Part({"count": torch.tensor([3])}), quiet=Part())
    state = ckpts.train_state
    state.iter, state.best = 4, {"key": "top1", "value": 0.5, "name": "best_top1_iter_4"}
    state.begin_epoch()
    state.inner_iter = 2
    ckpts.save("iter_4")
    ckpts.wait()
    folder = ckpts.root / "iter_4"
    # A part with an empty state writes no file; no optimizer part, no optimizer files.
    assert sorted(p.name for p in folder.iterdir()) == [
        "counter.safetensors",
        "manifest.json",
        "model.safetensors",
        "recipe.toml",
        "rng.json",
        "rng.safetensors",
        "trainer_state.json",
    ]
    saved = json.loads((folder / "trainer_state.json").read_text())
    assert {k: v for k, v in saved.items() if k != "versions"} == {
        "epoch": 0,
        "iter": 4,
        "inner_iter": 2,
        "by_epoch": False,
        "best": state.best,
        "num_processes": 1,
        "classes": {"names": ["a", "b"]},
        "scaler": None,
    }
    assert (ckpts.root / "latest").read_text().strip() == "iter_4"

    again = manager(tmp_path, rng=Part(), counter=Part(), quiet=Part())
    again.resume(folder)
    parts = again.states
    assert torch.equal(parts["model"].loaded["w"], torch.arange(4.0))
    assert torch.equal(parts["counter"].loaded["count"], torch.tensor([3])) and parts["quiet"].loaded == {}
    assert parts["rng"].loaded["meta"] == {"seed": 7}
    assert torch.equal(parts["rng"].loaded["tensors"]["torch"], torch.tensor([1, 2], dtype=torch.uint8))
    resumed = again.train_state
    assert (resumed.epoch, resumed.iter, resumed.resume_inner_iter, resumed.mid_epoch) == (0, 4, 2, False)
    assert resumed.best == state.best and again.last == "iter_4"


def test_interval_checkpoints_are_pruned_to_max_keep_and_one_best_is_kept(tmp_path):
    overrides = {"checkpoint_config": {"interval": 2, "max_keep_ckpts": 2, "save_last": True}}
    ckpts = manager(tmp_path, overrides, optimizer=Part({"state": {}, "param_groups": [{"params": [0]}]}))
    state = ckpts.train_state
    for it in range(1, 10):
        state.iter = it
        ckpts.after_train_iter(last=it == 9)
        if it in (3, 5):
            ckpts.save_best("top1", 0.5 + it)
    ckpts.wait()
    # iter_2, 4, 6, 8 by the interval and iter_9 as the last; the newest two kept; the newer best replaced the first.
    assert names(ckpts.root) == {"iter_8", "iter_9", "best_top1_iter_5"}
    assert (ckpts.root / "latest").read_text().strip() == "iter_9"
    assert json.loads((ckpts.root / "iter_9" / "trainer_state.json").read_text())["best"]["value"] == 5.5
    assert ckpts.find_resumable() == ckpts.root / "iter_9"


def test_resume_refuses_weights_only_and_the_other_runner_type_before_loading_anything(tmp_path):
    optimizer = Part({"state": {}, "param_groups": [{"params": [0], "lr": 0.1}]})
    ckpts = manager(tmp_path, optimizer=optimizer)
    ckpts.train_state.iter = 2
    ckpts.save("iter_2", save_optimizer=False)
    ckpts.save("iter_3")
    ckpts.wait()
    fresh = manager(tmp_path, optimizer=Part())
    with pytest.raises(RecipeError, match="iter_2: saved without optimizer state"):
        fresh.resume(ckpts.root / "iter_2")
    epochs = manager(tmp_path, optimizer=Part(), train_state=TrainState(by_epoch=True))
    with pytest.raises(RecipeError, match="iter_3: saved by an iteration-based run; runner.type differs"):
        epochs.resume("auto")
    assert fresh.states["model"].loaded is None and epochs.states["model"].loaded is None
    fresh.resume("auto")
    assert fresh.states["optimizer"].loaded["param_groups"] == [{"params": [0], "lr": 0.1}]


def test_parts_have_one_name_each_and_must_be_stateful(tmp_path):
    ckpts = manager(tmp_path)
    for taken in ("model", "train_state", "optimizer", ".hidden"):
        with pytest.raises(ValueError, match="taken or not allowed"):
            ckpts.add(taken, Part())
    with pytest.raises(TypeError, match="state_dict / load_state_dict"):
        ckpts.add("ema", object())
    ckpts.add("ema", Part())
    with pytest.raises(ValueError, match="taken"):
        ckpts.add("ema", Part())


def resumable(tmp_path: Path) -> CheckpointManager:
    """A manager of fake model and optimizer parts, the real random generators and the NaN guard
    (its state changed, so that every checkpoint holds nan_guard.safetensors)."""
    ckpts = manager(tmp_path, optimizer=Part({"state": {}, "param_groups": [{"params": [0]}]}), rng=RNGState())
    guard = StepGuard(ckpts.recipe.nan_guard, None, ckpts.train_state, ckpts)  # type: ignore[arg-type]
    guard.lr_factor = 0.5  # the guard adds itself as the part `nan_guard`
    assert ckpts.states[STEM] is guard
    return ckpts


def saved_iters(ckpts: CheckpointManager, *iters: int) -> Path:
    """Checkpoints `iter_N` of `iters`; returns the root."""
    for it in iters:
        ckpts.train_state.iter = it
        ckpts.save(f"iter_{it}")
    ckpts.wait()
    return ckpts.root


def test_auto_resume_skips_weights_only_and_damaged_checkpoints(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(logging.getLogger("accel_trainer"), "propagate", True)
    ckpts = resumable(tmp_path)
    root = saved_iters(ckpts, 2, 3)
    ckpts.save("best_top1_iter_4", save_optimizer=False)
    ckpts.wait()
    flip_last_byte(root / "iter_3" / "model.safetensors")
    with caplog.at_level(logging.WARNING):
        assert resumable(tmp_path).find_resumable() == root / "iter_2"
    assert "best_top1_iter_4: weights only (no optimizer state)" in caplog.text
    assert f"{root / 'iter_3' / 'model.safetensors'}: sha256 mismatch" in caplog.text


@pytest.mark.parametrize("kind", ["absolute", "relative"])
def test_a_best_name_read_from_a_checkpoint_can_remove_nothing_outside_the_root(tmp_path, kind, monkeypatch, caplog):
    monkeypatch.setattr(logging.getLogger("accel_trainer"), "propagate", True)
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "data.txt").write_text("keep")
    ckpts = resumable(tmp_path)  # its root: tmp_path/work/checkpoints
    ckpts.train_state.best = {"key": "top1", "value": -1, "name": str(victim) if kind == "absolute" else "../../victim"}
    root = saved_iters(ckpts, 2)
    resumed = resumable(tmp_path)
    with pytest.raises(CheckpointError, match=r"iter_2/trainer_state\.json: field 'best' = .*best_<metric>_epoch_N"):
        resumed.resume(root / "iter_2")
    with caplog.at_level(logging.WARNING):
        resumed.resume("auto")  # the only checkpoint is damaged: skipped, a fresh start
    assert resumed.train_state.iter == 0 and any("field 'best'" in r.getMessage() for r in caplog.records)
    resumed.train_state.iter = 3
    resumed.save_best("top1", 0.5)
    resumed.wait()
    assert (victim / "data.txt").read_text() == "keep"


def _with_rng_field(folder: Path, **fields: object) -> None:
    replace_verified(
        folder, "rng.json", json.dumps({**json.loads((folder / "rng.json").read_text()), **fields}).encode()
    )


def _as_float64(folder: Path, name: str) -> None:
    tensors = {k: v.double() for k, v in load_file(folder / name).items()}
    replace_verified(folder, name, safetensors_bytes(tensors))


def _digests_as_a_list(folder: Path) -> None:
    digests = json.loads((folder / "manifest.json").read_text())["sha256"]
    (folder / "manifest.json").write_text(json.dumps({"sha256": sorted(digests)}))


def _to_dev_zero(folder: Path) -> None:
    (folder / "model.safetensors").unlink()
    (folder / "model.safetensors").symlink_to("/dev/zero")


DEEP_OPTIMIZER = '{"state": {}, "param_groups": [' + '{"a": ' * 700 + "1" + "}" * 700 + "]}"
EMPTY_GUARD = {"lr_factor": torch.empty(0, dtype=torch.float64), "rollbacks": torch.empty(0, dtype=torch.int64)}
# Damage that still verifies (the digests rewritten, as whoever writes a checkpoint can): the file it names, and how.
DAMAGE: dict[str, tuple[str, Callable[[Path], None]]] = {
    "digests-a-list": ("manifest.json", _digests_as_a_list),
    "manifest-deep": ("manifest.json", lambda f: (f / "manifest.json").write_text("[" * 200_000)),
    "trainer-state-deep": ("trainer_state.json", lambda f: replace_verified(f, "trainer_state.json", b"[" * 200_000)),
    "optimizer-deep": ("optimizer.json", lambda f: replace_verified(f, "optimizer.json", DEEP_OPTIMIZER.encode())),
    "rng-json-empty": ("rng.json", lambda f: replace_verified(f, "rng.json", b"{}")),
    "rng-position-a-string": ("rng.json", lambda f: _with_rng_field(f, numpy_pos="3")),
    "rng-floats": ("rng.safetensors", lambda f: _as_float64(f, "rng.safetensors")),
    "recipe-not-toml": ("recipe.toml", lambda f: replace_verified(f, "recipe.toml", b"[model\nbackbone = ")),
    "nan-guard-empty": (
        "nan_guard.safetensors",
        lambda f: replace_verified(f, f"{STEM}.safetensors", safetensors_bytes(EMPTY_GUARD)),
    ),
    "model-is-dev-zero": ("model.safetensors", _to_dev_zero),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_damage_that_verifies_is_skipped_by_auto_and_named_by_path(tmp_path, damage, monkeypatch, caplog):
    monkeypatch.setattr(logging.getLogger("accel_trainer"), "propagate", True)
    root = saved_iters(resumable(tmp_path), 2, 3)
    (root / "latest").unlink()  # so that every folder is read to order them (as after a crash before `latest` moved)
    file, harm = DAMAGE[damage]
    harm(root / "iter_3")
    with pytest.raises(CheckpointError, match=re.escape(f"{root / 'iter_3' / file}: ")):
        resumable(tmp_path).resume(root / "iter_3")
    again = resumable(tmp_path)
    with caplog.at_level(logging.WARNING):
        again.resume("auto")
    assert again.train_state.iter == 2 and again.last == "iter_2"
    assert any(f"iter_3/{file}" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)


def test_a_latest_file_that_names_no_folder_is_ignored_with_a_warning(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(logging.getLogger("accel_trainer"), "propagate", True)
    root = saved_iters(resumable(tmp_path), 2, 3)
    (root / "latest").write_bytes(b"\xff\n")
    again = resumable(tmp_path)
    with caplog.at_level(logging.WARNING):
        again.resume("auto")
    assert again.last == "iter_3"
    assert any(
        "latest: holds" in r.getMessage() and "not a checkpoint folder name" in r.getMessage() for r in caplog.records
    )


def test_resume_with_another_model_is_one_line_naming_what_differs(tmp_path, capsys):
    recipe = write_recipe(tmp_path)
    Trainer.from_recipe(recipe, overrides={"runner.max_epochs": 1, "workflow": [["train", 1]]}).fit()
    capsys.readouterr()
    code = cli.main([str(recipe), "--resume", "auto", "--set", "model.num_classes=5"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "epoch_1/model.safetensors: the checkpoint's model does not match the recipe's (2 shapes differ" in err[0]
    assert (
        "fc.weight [4, 512] saved, [5, 512] here" in err[0] and "the recipe changed model.num_classes: 4 -> 5" in err[0]
    )


class StepCount(Hook):
    """A user hook that keeps state in checkpoints: the optimizer steps it saw."""

    state_name = "step_count"

    def __init__(self, priority: str = "NORMAL") -> None:
        self.priority = PRIORITIES[priority]
        self.count = torch.zeros(1, dtype=torch.int64)
        self.handed_back: dict | None = None

    def after_train_iter(self, trainer) -> None:
        self.count += 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"count": self.count.clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.handed_back = state
        self.count = state["count"].clone()


@pytest.mark.parametrize("priority, in_checkpoint", [("ABOVE_NORMAL", 6), ("NORMAL", 5)])
def test_a_hook_with_a_state_name_is_a_checkpoint_part(tmp_path, priority, in_checkpoint):
    """Its state is in every checkpoint and comes back on resume; a hook above NORMAL priority has
    its `after_train_iter` in the step's checkpoint, one of NORMAL priority runs after it."""
    overrides = {**OLD_RUN, "ema.enable": False, "evaluation.save_best": "", "runner.max_epochs": 1}
    first = Trainer(load_recipe(write_recipe(tmp_path), overrides), model=tiny_net(), hooks=[StepCount(priority)])
    first.fit()
    saved = load_file(first.checkpoints.root / "iter_6" / "step_count.safetensors")
    assert saved["count"].tolist() == [in_checkpoint]
    hook = StepCount(priority)
    resumed = Trainer(load_recipe(write_recipe(tmp_path), overrides), model=tiny_net(), hooks=[hook])
    resumed.checkpoints.resume(first.checkpoints.root / "iter_6")
    assert hook.handed_back is not None and hook.count.tolist() == [in_checkpoint]


def folders(trainer: Trainer) -> set[str]:
    return {p.name for p in trainer.checkpoints.root.iterdir() if p.is_dir()}


def test_interval_max_keep_and_save_last(tiny_recipe):
    trainer = Trainer.from_recipe(
        tiny_recipe,
        overrides={
            "runner.max_epochs": 5,
            "workflow": [["train", 1]],
            "checkpoint_config": {"interval": 2, "max_keep_ckpts": 2, "save_last": True},
        },
    )
    trainer.fit()
    # Saved at epochs 2, 4 (interval) and 5 (last); only the newest two are kept.
    assert folders(trainer) == {"epoch_4", "epoch_5"}
    assert (trainer.checkpoints.root / "latest").read_text().strip() == "epoch_5"


def test_without_save_last_only_the_interval_counts(tiny_recipe):
    trainer = Trainer.from_recipe(
        tiny_recipe,
        overrides={
            "runner.max_epochs": 3,
            "workflow": [["train", 1]],
            "checkpoint_config": {"interval": 2, "save_last": False},
        },
    )
    trainer.fit()
    assert folders(trainer) == {"epoch_2"}


def test_iteration_checkpoints_in_an_iteration_runner_default_to_iterations(tiny_recipe):
    trainer = Trainer.from_recipe(
        tiny_recipe,
        overrides={
            "runner": {"type": "IterBasedRunner", "max_iters": 10},
            "workflow": [["train", 5]],
            "checkpoint_config": {"interval": 4},
        },
    )
    trainer.fit()
    assert folders(trainer) == {"iter_4", "iter_8", "iter_10"}


def test_non_finite_weights_are_never_written_and_nan_is_never_best(tiny_recipe):
    trainer = Trainer.from_recipe(tiny_recipe)
    with torch.no_grad():
        next(trainer.unwrapped_model.parameters()).fill_(float("nan"))
    with pytest.raises(RecipeError, match="iter_1: not written: 1 of .* model tensors are not finite"):
        trainer.checkpoints.save("iter_1")
    assert not (trainer.checkpoints.root / "iter_1").exists()
    hook = SaveBestHook("top1", "greater", [], [])
    assert not hook._better(float("nan"), None) and not hook._better(float("nan"), 0.3)


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
    assert sorted(p.name for p in root.iterdir()) == [".lock", "iter_2", "latest"]
    assert (root / "latest").read_text().strip() == "iter_2"
    checkpoint.verify_checkpoint(root / "iter_2")


# ----------------------------------------------------------------- a checkpoint of the previous release

FIXTURE = Path(__file__).parent / "fixtures" / "checkpoint_b68f241"
# What the run that wrote it was given besides the tiny recipe of tests/helpers/recipes.py (see the fixture's README).
OLD_RUN = {
    "runner.max_epochs": 2,
    "ema.enable": True,
    "evaluation.save_best": "top1",
    "checkpoint_config": {"by_epoch": False, "interval": 3},
    "data.augment.hflip": 0.5,
    "data.augment.scale": [0.5, 1.0],
    "accelerate.cpu_threads": 1,  # float results depend on the thread count too
}


def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 4),
    )


def old_run(tmp_path: Path, name: str) -> Trainer:
    recipe = write_recipe(tmp_path, name=f"{name}.toml", work_dir=str(tmp_path / name))
    return Trainer(load_recipe(recipe, OLD_RUN), model=tiny_net())


def assert_same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not (a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]))]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


def final(trainer: Trainer, stem: str = "model") -> dict[str, torch.Tensor]:
    return load_file(trainer.checkpoints.root / "iter_16" / f"{stem}.safetensors")


def test_a_checkpoint_of_the_previous_release_reads_and_rewrites_unchanged(tmp_path):
    """Read with today's code and written again at once, every part is what the old code wrote, and
    both folders resume to the same weights (on any machine)."""
    old = FIXTURE / "iter_9"
    rewriter = old_run(tmp_path, "rewrite")
    rewriter.checkpoints.resume(old)
    rewriter.checkpoints.save("iter_9")
    rewriter.checkpoints.wait()
    a, b = checkpoint.load_checkpoint(old), checkpoint.load_checkpoint(rewriter.checkpoints.root / "iter_9")
    assert_same_tensors(a.model_state, b.model_state)
    assert a.extra_tensors.keys() == b.extra_tensors.keys() == {"ema", "nan_guard"}
    for stem in a.extra_tensors:
        assert_same_tensors(a.extra_tensors[stem], b.extra_tensors[stem])
    assert_same_tensors(a.rng[0], b.rng[0])
    assert a.rng[1] == b.rng[1]
    assert a.optimizer_state is not None and b.optimizer_state is not None
    for index, state in a.optimizer_state["state"].items():
        assert_same_tensors(state, b.optimizer_state["state"][index])
    assert {k: v for k, v in a.trainer_state.items() if k != "versions"} == {
        k: v for k, v in b.trainer_state.items() if k != "versions"
    }

    from_old, from_new = old_run(tmp_path, "from_old"), old_run(tmp_path, "from_new")
    from_old.fit(resume=old)
    from_new.fit(resume=rewriter.checkpoints.root / "iter_9")
    assert_same_tensors(final(from_old), final(from_new))
    assert_same_tensors(final(from_old, "ema"), final(from_new, "ema"))


def test_a_checkpoint_of_the_previous_release_resumes_bit_identically(tmp_path):
    straight = old_run(tmp_path, "straight")
    straight.guard.lr_factor, straight.guard.rollbacks = 0.5, 1  # as the old run was started
    straight.fit()
    resumed = old_run(tmp_path, "resumed")
    resumed.fit(resume=FIXTURE / "iter_9")
    written_on = json.loads((FIXTURE / "written_on.json").read_text())
    here = {"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability()}
    old_at_9 = checkpoint.read_tensors(FIXTURE / "iter_9" / "model.safetensors")
    at_9 = load_file(straight.checkpoints.root / "iter_9" / "model.safetensors")
    if any(written_on[k] != v for k, v in here.items()) and any(
        not torch.equal(at_9[k], old_at_9[k]) for k in old_at_9
    ):
        pytest.skip(f"this machine ({here}) computes the first 9 steps differently from the one that wrote the fixture")
    assert_same_tensors(at_9, old_at_9)  # today's code trains as the old code did
    assert_same_tensors(final(straight), final(resumed))
    assert_same_tensors(final(straight, "ema"), final(resumed, "ema"))
