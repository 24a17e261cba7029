"""Training throughput and MFU: the recipe path (our Trainer) vs a plain PyTorch/timm loop.

Classification: recipes/imagenet/resnest50d.toml at 224 px; detection (--det):
recipes/coco/fcos_resnest50d_fpn_1x.toml at 800 px. Every combination of precision (fp32, bf16
and fp16 AMP), channels_last and torch.compile runs on both paths with the same model, batch and
optimizer (the recipes' EMA and mixup are off on both). Inputs are random batches already on the
device, so the table measures the model and the training loop, not data loading
(benchmarks/dataloader.py does that): the recipe path trains through `Trainer.fit()` with its
train loader swapped for those batches (the same hand-off a freeze stage uses), the plain path
is forward / backward / step with torch.autocast, a GradScaler for fp16, channels_last and
`torch.compile(model)` written by hand.

MFU = model FLOPs per second / the device's peak. Model FLOPs of one training step (forward +
backward) are counted once with torch.utils.flop_counter.FlopCounterMode; the peak is measured
here with a big matmul in the configuration's dtype. fp32 means TF32 math where the device has
it (matmul precision "high"; cuDNN convolutions use TF32 by default).

    python benchmarks/gpu_throughput.py                  # GPU, full size, classification
    python benchmarks/gpu_throughput.py --det            # plus detection at 800 px
    python benchmarks/gpu_throughput.py --tiny           # CPU smoke run, tiny sizes, seconds
    options: --dtypes fp32 bf16 fp16  --channels-last off on  --compile off on  --steps 30 --warmup 10
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from accel_trainer import Hook, Trainer, load_recipe
from accel_trainer.distributed import batch_to_channels_last, model_to_channels_last
from accel_trainer.hooks.base import PRIORITIES
from accel_trainer.optim import build_optimizer
from accel_trainer.tasks import build_task

ROOT = Path(__file__).resolve().parents[1]
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
MIXED = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}


@dataclass
class Workload:
    """One model at one size: how to build its recipe and a random batch."""

    name: str
    recipe: str
    overrides: dict
    batch_size: int
    img_size: int

    def batch(self, device: torch.device, seed: int = 0):
        gen = torch.Generator().manual_seed(seed)
        images = torch.rand(self.batch_size, 3, self.img_size, self.img_size, generator=gen)
        if "detection" not in self.overrides.get("model.task", ""):
            labels = torch.randint(0, self.overrides["model.num_classes"], (self.batch_size,), generator=gen)
            return images.to(device), labels.to(device)
        targets = []
        for _ in range(self.batch_size):
            xy = torch.rand(4, 2, generator=gen) * self.img_size * 0.6
            wh = torch.rand(4, 2, generator=gen) * self.img_size * 0.3 + 8
            boxes = torch.cat([xy, xy + wh], 1)
            labels = torch.randint(0, self.overrides["model.num_classes"], (4,), generator=gen)
            targets.append({"boxes": boxes.to(device), "labels": labels.to(device)})
        return [im.to(device) for im in images], targets


def workloads(args: argparse.Namespace) -> list[Workload]:
    common = {"data.type": "shapes", "ema.enable": False}
    no_mixup = {"data.augment.mixup": 0.0, "data.augment.cutmix": 0.0}  # classification keys
    if args.tiny:
        cls = Workload(
            "cls resnest14d 32px",
            "recipes/imagenet/resnest50d.toml",
            {**common, **no_mixup, "model.backbone": "resnest14d", "model.num_classes": 10},
            4,
            32,
        )
        det = Workload(
            "det fcos resnest14d 64px",
            "recipes/coco/fcos_resnest50d_fpn_1x.toml",
            {
                **common,
                "model.task": "detection",
                "model.backbone": "resnest14d",
                "model.num_classes": 4,
                "model.min_size": 64,
                "model.max_size": 64,
            },
            2,
            64,
        )
    else:
        cls = Workload(
            "cls resnest50d 224px",
            "recipes/imagenet/resnest50d.toml",
            {**common, **no_mixup, "model.num_classes": 1000},
            args.batch_size,
            224,
        )
        det = Workload(
            "det fcos resnest50d 800px",
            "recipes/coco/fcos_resnest50d_fpn_1x.toml",
            {**common, "model.task": "detection", "model.num_classes": 80},
            args.det_batch_size,
            800,
        )
    return [cls, det] if args.det else [cls]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(dtype: torch.dtype, device: torch.device, n: int, repeats: int = 10) -> float:
    """Measured FLOP/s of an n x n matmul in `dtype` (the best of `repeats` timings)."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    a @ b
    sync(device)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def step_flops(task, model: torch.nn.Module, batch) -> int:
    """FLOPs of one training step's forward and backward (the optimizer update is not counted)."""
    model.train()
    with FlopCounterMode(display=False) as counter:
        loss, _ = task.train_loss(model, batch)
        loss.backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


class _Batches:
    """Stands in for the train loader: the same on-device batch, `length` times per epoch."""

    def __init__(self, batch, length: int) -> None:
        self.batch, self.length = batch, length

    def __len__(self) -> int:
        return self.length

    def __iter__(self):
        return itertools.repeat(self.batch, self.length)

    def set_epoch(self, epoch: int) -> None:
        pass


class _StepClock(Hook):
    """Device-synchronised time from the end of warm-up to the last step."""

    priority = PRIORITIES["LOWEST"]

    def __init__(self, warmup: int, device: torch.device) -> None:
        self.warmup, self.device = warmup, device

    def after_train_iter(self, trainer: Trainer) -> None:
        if trainer.iter == self.warmup:
            sync(self.device)
            self.start = time.perf_counter()
        elif trainer.iter == trainer.max_iters:
            sync(self.device)
            self.seconds = time.perf_counter() - self.start


def recipe_for(w: Workload, dtype: str, channels_last: bool, compile_: bool, steps: int, work_dir: Path, cpu: bool):
    overrides = {
        **w.overrides,
        "data.batch_size": w.batch_size,
        "data.num_workers": 0,
        "model.pretrained": False,  # throughput does not depend on the starting weights
        "data.pin_memory": False,
        "workflow": [["train", 1]],
        "runner": {"type": "IterBasedRunner", "max_iters": steps},
        "lr_config": {"policy": "fixed"},
        "evaluation.interval": 10**6,
        "evaluation.save_best": "",
        "checkpoint_config.interval": 10**6,
        "checkpoint_config.save_last": False,
        "log_level": "WARNING",
        "accelerate.mixed_precision": MIXED[dtype],
        "accelerate.channels_last": channels_last,
        "accelerate.compile": compile_,
        "accelerate.cpu": cpu,
        "accelerate.cpu_threads": torch.get_num_threads(),  # the same threads as the plain loop
    }
    return load_recipe(ROOT / w.recipe, overrides, work_dir=work_dir)


def run_recipe(w: Workload, dtype: str, channels_last: bool, compile_: bool, args, device, work_dir: Path) -> float:
    recipe = recipe_for(w, dtype, channels_last, compile_, args.warmup + args.steps, work_dir, device.type == "cpu")
    torch._dynamo.reset()
    clock = _StepClock(args.warmup, device)
    trainer = Trainer(recipe, train_dataset=[], val_dataset=[], hooks=[clock])
    trainer.train_loader = _Batches(w.batch(trainer.accelerator.device), args.warmup + args.steps)
    trainer.fit()
    return args.steps * w.batch_size / clock.seconds


def run_plain(w: Workload, dtype: str, channels_last: bool, compile_: bool, args, device, work_dir: Path) -> float:
    recipe = recipe_for(w, dtype, channels_last, compile_, args.warmup + args.steps, work_dir, device.type == "cpu")
    task = build_task(recipe)
    torch._dynamo.reset()
    model = task.build_model().to(device).train()
    optimizer, _ = build_optimizer(model, recipe.specs.optimizer)
    batch = w.batch(device)
    if channels_last:
        model = model_to_channels_last(model)
    forward: Callable = torch.compile(model) if compile_ else model
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == "fp16")
    amp = contextlib.nullcontext() if dtype == "fp32" else torch.autocast(device.type, dtype=DTYPES[dtype])
    for i in range(args.warmup + args.steps):
        if i == args.warmup:
            sync(device)
            start = time.perf_counter()
        step_batch = batch_to_channels_last(batch) if channels_last else batch  # as a loader's batch would be
        with amp:
            loss, _ = task.train_loss(forward, step_batch)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
    sync(device)
    return args.steps * w.batch_size / (time.perf_counter() - start)


def skip_reason(dtype: str, device: torch.device) -> str:
    if dtype == "fp16" and device.type != "cuda":
        return "skipped: fp16 AMP needs a GPU"
    if dtype == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return "skipped: no bf16 on this GPU"
    return ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny models and sizes on the CPU, a smoke run")
    parser.add_argument("--det", action="store_true", help="also the detection recipe")
    parser.add_argument("--dtypes", nargs="+", choices=list(DTYPES), default=list(DTYPES))
    parser.add_argument("--channels-last", nargs="+", choices=["off", "on"], default=["off", "on"])
    parser.add_argument("--compile", nargs="+", choices=["off", "on"], default=["off", "on"])
    parser.add_argument("--batch-size", type=int, default=128, help="classification batch")
    parser.add_argument("--det-batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 30, --tiny 2)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 10, --tiny 1)")
    parser.add_argument("--repeats", type=int, default=1, help="runs per configuration; the median is shown")
    args = parser.parse_args()
    args.steps = args.steps or (2 if args.tiny else 30)
    args.warmup = args.warmup or (1 if args.tiny else 10)
    device = torch.device("cpu" if args.tiny or not torch.cuda.is_available() else "cuda")
    torch.set_float32_matmul_precision("high")
    matmul_n = 512 if device.type == "cpu" else 8192

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({os.cpu_count()} cores)"
    print(
        f"{name}, torch {torch.__version__}, {args.steps} timed steps after {args.warmup} warm-up, "
        f"median of {args.repeats}; img/s = training images per second, MFU vs the measured matmul peak"
    )
    peaks = {d: matmul_peak(DTYPES[d], device, matmul_n) for d in args.dtypes if not skip_reason(d, device)}
    print("matmul peak: " + ", ".join(f"{d} {p / 1e12:.2f} TFLOP/s" for d, p in peaks.items()))
    header = (
        f"{'workload':28s}{'dtype':>6s}{'NHWC':>6s}{'compile':>8s}{'recipe img/s':>14s}{'plain img/s':>13s}"
        f"{'ratio':>7s}{'recipe MFU':>12s}{'plain MFU':>11s}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for w in workloads(args):
            recipe = recipe_for(w, "fp32", False, False, 1, Path(tmp) / "flops", device.type == "cpu")
            task = build_task(recipe)
            flops = step_flops(task, task.build_model().to(device), w.batch(device))
            print(f"\n{w.name}, batch {w.batch_size}: {flops / w.batch_size / 1e9:.2f} GFLOP per training image")
            print(header)
            for dtype, cl, comp in itertools.product(args.dtypes, args.channels_last, args.compile):
                label = f"{w.name:28s}{dtype:>6s}{cl:>6s}{comp:>8s}"
                reason = skip_reason(dtype, device)
                if reason:
                    print(f"{label}  {reason}")
                    continue
                rates = {}
                try:
                    for path, run in (("recipe", run_recipe), ("plain", run_plain)):
                        with contextlib.redirect_stdout(io.StringIO()):
                            rates[path] = statistics.median(
                                run(w, dtype, cl == "on", comp == "on", args, device, Path(tmp) / path)
                                for _ in range(args.repeats)
                            )
                except Exception as exc:  # one failing configuration must not lose the rest of the table
                    print(f"{label}  failed: {type(exc).__name__}: {str(exc).splitlines()[0][:80] if str(exc) else ''}")
                    continue
                mfu = {p: r / w.batch_size * flops / peaks[dtype] for p, r in rates.items()}
                print(
                    f"{label}{rates['recipe']:14.1f}{rates['plain']:13.1f}{rates['recipe'] / rates['plain']:7.3f}"
                    f"{100 * mfu['recipe']:11.1f}%{100 * mfu['plain']:10.1f}%"
                )


if __name__ == "__main__":
    main()
