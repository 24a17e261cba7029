"""Input pipeline vs model: can the loader feed the model, or is data the bottleneck?

For each recipe (default: recipes/cls.toml and recipes/det.toml, built-in shapes data) the
recipe's own train loader (the task's datasets, transforms, collate and seeded sampling) is
iterated with 0, 1 and 2 workers, and the recipe's model trains on batches already in memory
(forward, backward, optimizer step). Loader images/s count from the first batch on (worker
start-up is shown on its own); the ratio is loader / model images/s, so below 1 means the model
waits for data with that many workers. Medians of --repeats passes.

    python benchmarks/dataloader.py [--recipes recipes/cls.toml recipes/det.toml] [--workers 0 1 2]
        [--batches 20] [--repeats 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from itertools import islice
from pathlib import Path

import torch
from accelerate.utils import send_to_device

from accel_trainer import load_recipe
from accel_trainer.optim import build_optimizer
from accel_trainer.tasks import build_task

ROOT = Path(__file__).resolve().parents[1]


def loader_rate(task, dataset, batch_size: int, batches: int) -> tuple[float, float]:
    """(images/s after the first batch, seconds to the first batch)."""
    loader = task.build_loader(dataset, batch_size=batch_size, train=True)
    start = time.perf_counter()
    it = iter(loader)
    next(it)
    first = time.perf_counter()
    images = sum(len(batch[0]) for batch in islice(it, batches))
    return images / (time.perf_counter() - first), first - start


def model_rate(task, dataset, recipe, batches: int, device: torch.device) -> float:
    """Training images/s of the recipe's model on batches that are already on the device."""
    loader = task.build_loader(dataset, batch_size=recipe.data.batch_size, train=True)
    held = [send_to_device(b, device) for b in islice(loader, min(batches, 4))]
    model = task.build_model().to(device).train()
    optimizer, _ = build_optimizer(model, recipe.specs.optimizer)

    def step(batch) -> None:
        loss, _ = task.train_loss(model, batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step(held[0])
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    images = 0
    for i in range(batches):
        batch = held[i % len(held)]
        step(batch)
        images += len(batch[0])
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return images / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--recipes", nargs="+", default=[str(ROOT / "recipes/cls.toml"), str(ROOT / "recipes/det.toml")]
    )
    parser.add_argument("--workers", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--batches", type=int, default=20, help="batches timed per pass")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)

    print(
        f"{os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads, device {device}, torch {torch.__version__}, "
        f"median of {args.repeats} passes of {args.batches} batches"
    )
    print(f"{'recipe':14s}{'pipeline':>18s}{'images/s':>10s}{'startup s':>11s}{'data/model':>12s}")
    with tempfile.TemporaryDirectory() as tmp:
        for path in args.recipes:
            recipe = load_recipe(path, {"data.pin_memory": device.type == "cuda"}, work_dir=Path(tmp) / "work")
            task = build_task(recipe)
            train_set, _ = task.build_datasets()
            name = Path(path).stem
            model = statistics.median(
                model_rate(task, train_set, recipe, args.batches, device) for _ in range(args.repeats)
            )
            print(f"{name:14s}{'model (train)':>18s}{model:10.1f}{'':>11s}{'':>12s}")
            for workers in args.workers:
                recipe.data.num_workers = workers
                runs = [loader_rate(task, train_set, recipe.data.batch_size, args.batches) for _ in range(args.repeats)]
                rate = statistics.median(r[0] for r in runs)
                startup = statistics.median(r[1] for r in runs)
                print(f"{name:14s}{f'loader, {workers} workers':>18s}{rate:10.1f}{startup:11.2f}{rate / model:12.2f}")


if __name__ == "__main__":
    main()
