"""Trainer overhead: our Trainer vs a hand-written Accelerate loop doing the same work.

Both sides train recipes/cls.toml's model (resnest14d) on the same built-in shapes images with
the same transforms, batch size, optimizer settings (no weight decay on norm/bias), warmup + cosine lr
per iteration, label smoothing, per-epoch validation (gather_for_metrics, top-1) and a loss
log line every `log_config.interval` iterations. Data loads in-process (num_workers = 0) and no
checkpoints are written (benchmarks/checkpoint.py measures those). Runs alternate
trainer / plain / plain / trainer ... in this one process; the table shows medians, and the
ratio is the median of the ratios of runs paired in time, which cancels slow load drift on a
shared machine.

- per iteration: train-epoch wall time / iterations, epochs after the first of each run.
- whole run: building everything (model, data, loaders, Accelerator) + every epoch + validation.
Each as wall time and as this process's CPU time (torch on one thread: the work done, which
other jobs on a shared machine disturb less than the wall clock).

    python benchmarks/overhead.py [--repeats 5] [--epochs 3] [--img-size 32] [--batch-size 32] [--num-train 512] [--log-interval 8]

`--process` times whole processes instead, as a user runs them, with the machine's default
threads (OMP_NUM_THREADS removed) and `num_workers = 1`: `python -m accel_trainer recipes/cls.toml`
(no val, no checkpoints) against `benchmarks/plain_loop.py` on the same images, alternating; and
the start-up of `--help` and `--print-recipe` against `python -c "import torch"`.

    python benchmarks/overhead.py --process [--repeats 2] [--epochs 3] [--num-train 4096] [--log-interval 32]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import timm
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import set_seed
from timm.data import create_transform
from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder

from accel_trainer import Hook, Trainer, load_recipe
from accel_trainer.data.shapes import ShapesSpec, ensure_shapes_classification
from accel_trainer.hooks.base import PRIORITIES
from accel_trainer.recipe.reading import tomllib

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "cls.toml"
END_OF_RUN: list[float] = []  # wall seconds the trainer's after_run hooks took, per run


def now() -> tuple[float, float]:
    """(wall, CPU) seconds: CPU time of this process is less disturbed by other jobs on the machine."""
    return time.perf_counter(), time.process_time()


def since(start: tuple[float, float]) -> tuple[float, float]:
    wall, cpu = now()
    return wall - start[0], cpu - start[1]


class EpochClock(Hook):
    """Wall and CPU time of each train epoch (first hook in, first hook out)."""

    priority = PRIORITIES["HIGHEST"]

    def __init__(self) -> None:
        self.epochs: list[tuple[float, float]] = []
        self.iters: list[int] = []

    def before_train_epoch(self, trainer: Trainer) -> None:
        self.start = now()

    def after_train_epoch(self, trainer: Trainer) -> None:
        self.epochs.append(since(self.start))
        self.iters.append(trainer.inner_iter)

    def after_run(self, trainer: Trainer) -> None:
        self.run_end = now()


def bench_recipe(args: argparse.Namespace, work_dir: Path):
    return load_recipe(
        RECIPE,
        {
            "data.img_size": args.img_size,
            "data.batch_size": args.batch_size,
            "data.num_workers": 0,
            "data.pin_memory": False,
            "data.shapes.image_size": args.img_size,
            "data.shapes.num_train": args.num_train,
            "data.shapes.num_val": args.num_train // 4,
            "runner.max_epochs": args.epochs,
            "log_config.interval": args.log_interval,
            "checkpoint_config.interval": 10**6,
            "checkpoint_config.save_last": False,
            "evaluation.save_best": "",
            "accelerate.cpu_threads": torch.get_num_threads(),  # the same threads as the plain loop
        },
        work_dir=work_dir,
    )


def run_trainer(recipe) -> tuple[tuple[float, float], list[tuple[float, float]], list[int]]:
    start = now()
    clock = EpochClock()
    trainer = Trainer(recipe, hooks=[clock])
    trainer.fit()
    END_OF_RUN.append(since(clock.run_end)[0])
    return since(start), clock.epochs, clock.iters


def lr_factor(it: int, iters_per_epoch: int, total: int, warmup_ratio: float) -> float:
    """cls.toml's schedule: one epoch of linear warmup times a cosine to 0 over the epochs."""
    epoch = it // iters_per_epoch
    cosine = 0.5 * (1 + math.cos(math.pi * epoch / (total // iters_per_epoch)))
    if it < iters_per_epoch:
        cosine *= 1 - (1 - it / iters_per_epoch) * (1 - warmup_ratio)
    return cosine


def run_plain(recipe) -> tuple[tuple[float, float], list[tuple[float, float]], list[int]]:
    """What a person writes with Accelerate by hand for the same training."""
    start = now()
    AcceleratorState._reset_state(reset_partial_state=False)
    accelerator = Accelerator(cpu=True)
    set_seed(recipe.accelerate.seed)
    d, aug = recipe.data, recipe.data.augment
    s = d.shapes
    train_root, val_root = ensure_shapes_classification(
        ShapesSpec(num_train=s.num_train, num_val=s.num_val, image_size=s.image_size, seed=s.seed)
    )
    train_tf = create_transform(
        d.img_size,
        is_training=True,
        scale=tuple(aug.scale),
        hflip=aug.hflip,
        color_jitter=aug.color_jitter,
        auto_augment=None,
    )
    val_tf = create_transform(d.img_size, is_training=False, crop_pct=d.crop_pct)
    train_loader = DataLoader(ImageFolder(str(train_root), train_tf), batch_size=d.batch_size, shuffle=True)
    val_loader = DataLoader(ImageFolder(str(val_root), val_tf), batch_size=d.batch_size)
    model = timm.create_model(recipe.model.backbone, num_classes=recipe.model.num_classes)
    opt_args = {k: v for k, v in recipe.optimizer.items() if k not in ("type", "paramwise_cfg")}
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    optimizer = getattr(torch.optim, recipe.optimizer["type"])(
        [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}], **opt_args
    )
    model, optimizer, train_loader, val_loader = accelerator.prepare(model, optimizer, train_loader, val_loader)
    iters_per_epoch = len(train_loader)
    total = iters_per_epoch * recipe.runner.max_epochs
    warmup_ratio = recipe.lr_config["warmup_ratio"]
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda it: lr_factor(it, iters_per_epoch, total, warmup_ratio)
    )
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=aug.label_smoothing)
    interval = recipe.log_config.interval
    epochs, iters = [], []
    for epoch in range(recipe.runner.max_epochs):
        tick = now()
        model.train()
        for i, (images, targets) in enumerate(train_loader, 1):
            loss = criterion(model(images), targets)
            accelerator.backward(loss)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            if i % interval == 0:
                accelerator.print(
                    f"epoch {epoch + 1} iter {i} loss {loss.item():.4f} lr {scheduler.get_last_lr()[0]:.3e}"
                )
        epochs.append(since(tick))
        iters.append(iters_per_epoch)
        model.eval()
        hits = []
        with torch.no_grad():
            for images, targets in val_loader:
                hits.append(accelerator.gather_for_metrics(model(images).argmax(1).eq(targets)))
        accelerator.print(f"epoch {epoch + 1} top1 {100 * torch.cat(hits).float().mean().item():.2f}")
    return since(start), epochs, iters


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - start, proc.stdout


def paired(rows: dict[str, list[tuple[float, float]]], title: str) -> None:
    """Median of each side and of the paired ratios, with their spread."""
    print(title)
    print(f"{'':40s}{'ours':>10s}{'baseline':>10s}{'ratio':>8s}{'spread':>14s}")
    for name, pairs in rows.items():
        ratios = sorted(a / b for a, b in pairs)
        ours, base = statistics.median(a for a, _ in pairs), statistics.median(b for _, b in pairs)
        print(
            f"{name:40s}{ours:10.3f}{base:10.3f}{statistics.median(ratios):8.3f}{f'{ratios[0]:.3f}-{ratios[-1]:.3f}':>14s}"
        )


def process_main(args: argparse.Namespace) -> None:
    """Whole processes with default threads and a loader worker, and start-up times."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    sets = {
        "data.num_workers": 1,
        "data.img_size": args.img_size,
        "data.batch_size": args.batch_size,
        "data.shapes.image_size": args.img_size,
        "data.shapes.num_train": args.num_train,
        "data.shapes.num_val": max(args.num_train // 16, 1),
        "runner.max_epochs": args.epochs,
        "workflow": '[["train", 1]]',
        "evaluation.interval": 10**6,
        "evaluation.save_best": '""',
        "checkpoint_config.interval": 10**6,
        "checkpoint_config.save_last": "false",
        "log_config.interval": args.log_interval,
    }
    overrides = [f"{k}={v}" for k, v in sets.items()]
    recipe = load_recipe(RECIPE, {k: tomllib.loads(f"v = {v}")["v"] for k, v in sets.items()})
    s = recipe.data.shapes
    train_root, _ = ensure_shapes_classification(
        ShapesSpec(num_train=s.num_train, num_val=s.num_val, image_size=s.image_size, seed=s.seed)
    )
    rows: dict[str, list[tuple[float, float]]] = {"whole process, wall (s)": [], "per iteration after epoch 1 (ms)": []}
    startup: dict[str, list[tuple[float, float]]] = {"accel-trainer --help (s)": [], "RECIPE --print-recipe (s)": []}
    with tempfile.TemporaryDirectory() as tmp:
        cli = [sys.executable, "-m", "accel_trainer", str(RECIPE), "--no-progress", "--set", *overrides]
        plain = [
            sys.executable,
            str(ROOT / "benchmarks/plain_loop.py"),
            str(train_root),
            "--epochs",
            str(args.epochs),
            "--img-size",
            str(args.img_size),
            "--batch-size",
            str(args.batch_size),
            "--num-workers",
            "1",
            "--lr",
            str(recipe.optimizer["lr"]),
            "--log-interval",
            str(args.log_interval),
        ]
        for r in range(args.repeats):
            work = Path(tmp) / f"run{r}"
            results = {}
            for name in ("ours", "plain") if r % 2 == 0 else ("plain", "ours"):
                cmd = [*cli, "--work-dir", str(work)] if name == "ours" else plain
                results[name] = timed(cmd, env)
            (log_json,) = work.glob("*.log.json")
            windows = [json.loads(line) for line in log_json.read_text().splitlines()]
            # The mean over every window of the later epochs: the plain loop's figure is their wall time
            # over their iterations, so epoch starts (a new loader worker) count on both sides.
            ours_iter = statistics.mean(w["time"] for w in windows if w.get("mode") == "train" and w["epoch"] > 1)
            plain_iter = float(results["plain"][1].rsplit(":", 1)[1])
            rows["whole process, wall (s)"].append((results["ours"][0], results["plain"][0]))
            rows["per iteration after epoch 1 (ms)"].append((1e3 * ours_iter, 1e3 * plain_iter))
            print(
                f"repeat {r + 1}: whole {results['ours'][0]:.2f} / {results['plain'][0]:.2f} s, "
                f"per iteration {1e3 * ours_iter:.1f} / {1e3 * plain_iter:.1f} ms (ours / plain)",
                file=sys.stderr,
            )
            torch_import = timed([sys.executable, "-c", "import torch"], env)[0]
            startup["accel-trainer --help (s)"].append((timed(cli[:3] + ["--help"], env)[0], torch_import))
            startup["RECIPE --print-recipe (s)"].append(
                (timed([*cli[:4], "--print-recipe", "--set", *overrides], env)[0], torch_import)
            )
    print(
        f"{recipe.model.backbone} at {args.img_size} px, batch {args.batch_size}, {args.epochs} epochs of {args.num_train} "
        f"images, num_workers 1, default threads, {args.repeats} repeats, {os.cpu_count()} CPUs, torch {torch.__version__}"
    )
    paired(rows, "python -m accel_trainer vs benchmarks/plain_loop.py (ratio: median of the runs paired in time)")
    paired(startup, "start-up vs python -c 'import torch'")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--process", action="store_true", help="whole processes, default threads, num_workers = 1")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--img-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-train", type=int, help="default 512; 4096 with --process")
    parser.add_argument("--log-interval", type=int, help="default 8; 32 with --process")
    args = parser.parse_args()
    if args.num_train is None:
        args.num_train = 4096 if args.process else 512
    if args.log_interval is None:
        args.log_interval = 32 if args.process else 8
    if args.process:
        process_main(args)
        return

    runners = {"trainer": run_trainer, "plain": run_plain}
    rows = ("per iteration, wall (ms)", "per iteration, CPU (ms)", "whole run, wall (s)", "whole run, CPU (s)")
    values: dict[str, dict[str, list[float]]] = {row: {k: [] for k in runners} for row in rows}
    with tempfile.TemporaryDirectory() as tmp:
        recipe = bench_recipe(args, Path(tmp) / "work")
        for name in runners:  # untimed warm-up: data cache, imports, allocator
            with contextlib.redirect_stdout(io.StringIO()):
                runners[name](bench_recipe(args, Path(tmp) / "warmup"))
        for r in range(args.repeats):
            order = ("trainer", "plain") if r % 2 == 0 else ("plain", "trainer")
            for name in order:
                with contextlib.redirect_stdout(io.StringIO()):
                    whole, epochs, iters = runners[name](recipe)
                for i in (0, 1):
                    values[rows[i]][name].append(
                        1e3 * statistics.median(e[i] / n for e, n in zip(epochs[1:], iters[1:]))
                    )
                    values[rows[2 + i]][name].append(whole[i])

    print(
        f"{recipe.model.backbone} at {args.img_size} px, batch {args.batch_size}, {args.epochs} epochs of "
        f"{recipe.data.shapes.num_train} images, {args.repeats} repeats, {os.cpu_count()} CPUs, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}"
    )
    print("ratio: median of the trainer/plain ratios of the runs paired in time (spread: their min-max)")
    print(f"{'':26s}{'trainer':>10s}{'plain':>10s}{'ratio':>8s}{'spread':>14s}")
    for row in rows:
        ratios = sorted(a / b for a, b in zip(values[row]["trainer"], values[row]["plain"]))
        t, p = statistics.median(values[row]["trainer"]), statistics.median(values[row]["plain"])
        print(f"{row:26s}{t:10.2f}{p:10.2f}{statistics.median(ratios):8.3f}{f'{ratios[0]:.3f}-{ratios[-1]:.3f}':>14s}")
    print(
        f"of the trainer's whole run, after_run hooks (the curves.png plot): "
        f"{statistics.median(END_OF_RUN[1:]):.2f} s median"
    )


if __name__ == "__main__":
    main()
