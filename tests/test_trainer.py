from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from accel_trainer import Hook, Trainer, load_recipe

from .helpers.records import read_records


def test_two_epoch_run_lowers_loss_and_writes_logs(tiny_recipe):
    trainer = Trainer.from_recipe(tiny_recipe, overrides={"runner.max_epochs": 3})
    trainer.fit()
    work = Path(trainer.work_dir)
    records = read_records(work)
    train = [r for r in records if r["mode"] == "train"]
    val = [r for r in records if r["mode"] == "val"]
    assert len(val) == 3 and [r["epoch"] for r in val] == [1, 2, 3]
    assert all(r["num_samples"] == 21 for r in val)
    assert {"loss", "top1", "iter", "lr"} <= set(val[0]) and "top5" not in val[0]  # 4 classes
    assert {"loss", "lr", "time", "data_time", "memory", "epoch", "iter"} <= set(train[0])
    assert train[-1]["loss"] < train[0]["loss"]
    text_log = next(work.glob("*.log")).read_text()
    assert "Epoch [1][4/8] lr: 1.000e-03, eta:" in text_log
    assert "Epoch(val) [3]" in text_log and "top1:" in text_log
    threads = torch.get_num_threads()
    assert f"device cpu ({threads} thread{'s' if threads != 1 else ''})" in text_log
    assert (work / "recipe.toml").is_file()
    assert trainer.iter == 24 and trainer.epoch == 3


def test_val_first_workflow(tiny_recipe):
    trainer = Trainer.from_recipe(
        tiny_recipe, overrides={"workflow": [["val", 1], ["train", 2]], "runner.max_epochs": 2}
    )
    trainer.fit()
    records = read_records(trainer.work_dir)
    assert records[0]["mode"] == "val" and records[0]["epoch"] == 0
    assert [r["mode"] for r in records].count("val") == 1
    assert trainer.epoch == 2


def test_train_only_workflow_evaluates_by_interval(tiny_recipe):
    trainer = Trainer.from_recipe(
        tiny_recipe, overrides={"workflow": [["train", 1]], "runner.max_epochs": 2, "evaluation.interval": 2}
    )
    trainer.fit()
    val = [r for r in read_records(trainer.work_dir) if r["mode"] == "val"]
    assert [r["epoch"] for r in val] == [2]


def test_iter_based_runner(tiny_recipe):
    trainer = Trainer.from_recipe(
        tiny_recipe,
        overrides={
            "runner": {"type": "IterBasedRunner", "max_iters": 6},
            "workflow": [["train", 3], ["val", 1]],
            "log_config.by_epoch": False,
            "log_config.interval": 2,
        },
    )
    trainer.fit()
    records = read_records(trainer.work_dir)
    assert [r["iter"] for r in records if r["mode"] == "val"] == [3, 6]
    assert [r["iter"] for r in records if r["mode"] == "train"] == [2, 4, 6]
    assert trainer.iter == 6 and trainer.epoch == 0 and trainer.inner_iter == 6


def test_custom_hook_loaded_by_path(tiny_recipe, tmp_path, monkeypatch):
    (tmp_path / "my_hooks.py").write_text(
        "from accel_trainer import Hook\n"
        "class CountingHook(Hook):\n"
        "    def __init__(self, tag='x'):\n"
        "        self.tag, self.iters, self.epochs = tag, 0, []\n"
        "    def after_train_iter(self, trainer):\n"
        "        self.iters += 1\n"
        "    def after_train_epoch(self, trainer):\n"
        "        self.epochs.append(trainer.epoch)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    trainer = Trainer.from_recipe(
        tiny_recipe,
        overrides={"custom_hooks": [{"type": "my_hooks:CountingHook", "priority": "LOW", "tag": "t"}]},
    )
    trainer.fit()
    (hook,) = [h for h in trainer.hooks if type(h).__name__ == "CountingHook"]
    assert hook.tag == "t" and hook.priority == 70
    assert hook.iters == 16 and hook.epochs == [1, 2]


def test_num_class_check_stops_a_mismatched_head(tiny_recipe):
    from accel_trainer import RecipeError

    trainer = Trainer.from_recipe(tiny_recipe, overrides={"model.num_classes": 7})
    with pytest.raises(RecipeError, match="model.num_classes = 7 but the train dataset has 4 classes"):
        trainer.fit()


class _Blobs(Dataset):
    """Deterministic 3x8x8 inputs with 4 classes, no augmentation."""

    classes = ["a", "b", "c", "d"]

    def __init__(self, n: int) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 3, 8, 8, generator=g)
        self.y = torch.arange(n) % 4

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], int(self.y[i])


def _no_bn_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 4))


def _run_blobs(tiny_recipe, batch_size: int, accumulation: int, extra: dict | None = None) -> dict:
    overrides = {
        "data.batch_size": batch_size,
        "accelerate.gradient_accumulation_steps": accumulation,
        "workflow": [["train", 1]],
        "evaluation.interval": 100,
        "runner.max_epochs": 2,
        "optimizer": {"type": "SGD", "lr": 0.05, "momentum": 0.9, "weight_decay": 1e-4},
    }
    overrides.update(extra or {})
    recipe = load_recipe(tiny_recipe, overrides)
    trainer = Trainer(recipe, model=_no_bn_model(), train_dataset=_Blobs(64), val_dataset=_Blobs(8))
    trainer.fit()
    return {k: v.detach().clone() for k, v in trainer.unwrapped_model.state_dict().items()}, trainer


def test_gradient_accumulation_matches_big_batch(tiny_recipe):
    small, t_small = _run_blobs(tiny_recipe, 8, 2)
    big, t_big = _run_blobs(tiny_recipe, 16, 1)
    assert t_small.iter == t_big.iter == 8
    for key in big:
        torch.testing.assert_close(small[key], big[key], rtol=0, atol=1e-5)
    assert not torch.equal(big["3.weight"], _no_bn_model().state_dict()["3.weight"])


def test_bf16_mixed_precision_runs_on_cpu(tiny_recipe):
    weights, trainer = _run_blobs(tiny_recipe, 16, 1, {"accelerate.mixed_precision": "bf16"})
    assert trainer.accelerator.mixed_precision == "bf16"
    assert all(torch.isfinite(v).all() for v in weights.values())


class _FormatRecorder(nn.Module):
    """A tiny conv net that notes whether each input batch arrived channels_last."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.head = nn.Linear(8, 4)
        self.seen: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.is_contiguous(memory_format=torch.channels_last))
        return self.head(self.conv(x).mean((2, 3)))


def test_channels_last_converts_weights_and_batches(tiny_recipe):
    model = _FormatRecorder()
    overrides = {"accelerate.channels_last": True, "runner.max_epochs": 1}
    trainer = Trainer(load_recipe(tiny_recipe, overrides), model=model)
    assert trainer.unwrapped_model.conv.weight.is_contiguous(memory_format=torch.channels_last)
    trainer.fit()
    assert len(model.seen) == 8 + 2 and all(model.seen)


def test_compile_sets_the_dynamo_backend_and_checkpoints_plain_keys(tiny_recipe):
    from accelerate.utils import DynamoBackend, is_compiled_module

    trainer = Trainer(load_recipe(tiny_recipe, {"accelerate.compile": True}))
    assert trainer.accelerator.state.dynamo_plugin.backend == DynamoBackend.INDUCTOR
    assert is_compiled_module(trainer.model)
    assert not any(key.startswith("_orig_mod") for key in trainer.unwrapped_model.state_dict())
    plain = Trainer(load_recipe(tiny_recipe))
    assert not is_compiled_module(plain.model)


@pytest.mark.parametrize("deterministic", [False, True])
def test_cudnn_benchmark_unless_deterministic(tiny_recipe, deterministic):
    Trainer(load_recipe(tiny_recipe, {"accelerate.deterministic": deterministic}))
    assert torch.backends.cudnn.benchmark is not deterministic


def test_loader_options_reach_the_prepared_loaders(tiny_recipe):
    overrides = {
        "data.num_workers": 1,
        "data.pin_memory": True,
        "data.persistent_workers": True,
        "data.prefetch_factor": 3,
    }
    trainer = Trainer(load_recipe(tiny_recipe, overrides))
    pinned = torch.accelerator.is_available()  # pinning only pays (and is only done) for an accelerator
    for loader in (trainer.train_loader, trainer.val_loader):
        assert (loader.num_workers, loader.pin_memory, loader.persistent_workers, loader.prefetch_factor) == (
            1,
            pinned,
            True,
            3,
        )
    assert trainer.accelerator.non_blocking == pinned
    no_workers = Trainer(load_recipe(tiny_recipe, {"data.persistent_workers": True, "data.prefetch_factor": 3}))
    assert (no_workers.train_loader.persistent_workers, no_workers.train_loader.prefetch_factor) == (False, None)


class StageRecorder(Hook):
    """What a hook sees: stage names in order, and the batch / outputs of the iteration stages."""

    def __init__(self) -> None:
        self.stages: list[str] = []
        self.train_seen: list[tuple] = []
        self.val_seen: list[tuple] = []

    def before_run(self, trainer) -> None:
        self.stages.append("before_run")

    def after_run(self, trainer) -> None:
        self.stages.append("after_run")

    def after_train_iter(self, trainer) -> None:
        images, _ = trainer.batch
        self.train_seen.append((images.shape[0], float(trainer.outputs["loss"])))

    def after_val_iter(self, trainer) -> None:
        images, _ = trainer.batch
        self.val_seen.append((images.shape[0], tuple(trainer.outputs.shape)))


def test_hooks_see_the_batch_and_the_step_outputs(tiny_recipe):
    rec = StageRecorder()
    trainer = Trainer.from_recipe(tiny_recipe, overrides={"runner.max_epochs": 1}, hooks=[rec])
    trainer.fit()
    assert [n for n, _ in rec.train_seen] == [16] * 8  # 128 images, batch 16
    assert all(loss > 0 for _, loss in rec.train_seen)
    assert [n for n, _ in rec.val_seen] == [16, 5] and rec.val_seen[0][1] == (16, 4)  # logits of 4 classes


def test_evaluate_after_fit_does_not_replay_run_stages(tiny_recipe):
    rec = StageRecorder()
    trainer = Trainer.from_recipe(tiny_recipe, overrides={"runner.max_epochs": 1}, hooks=[rec])
    trainer.fit()
    log_json = next(Path(trainer.work_dir).glob("*.log.json"))
    before = log_json.read_text()
    results = trainer.evaluate()
    assert rec.stages == ["before_run", "after_run"]
    assert log_json.read_text() == before, "evaluate() after fit() wrote a second val record of the same weights"
    assert results["top1"] == trainer.val_results["top1"]


def test_evaluate_alone_opens_and_closes_one_run(tiny_recipe):
    rec = StageRecorder()
    trainer = Trainer.from_recipe(tiny_recipe, hooks=[rec])
    results = trainer.evaluate()
    assert rec.stages == ["before_run", "after_run"] and results["num_samples"] == 21
