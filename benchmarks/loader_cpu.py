"""Loader CPU per batch: recipes/cls.toml's train loader vs a plain torchvision ImageFolder.

Both read the same built-in shapes PNGs with the same timm transforms (random resized crop, flip,
normalise), batch 32, shuffled, short last batch dropped, in this process (`num_workers = 0`, one
torch thread), so the process CPU time per batch is what a loader worker spends. Ours adds what
makes runs resumable and independent of `num_workers` (a seed per sample from (seed, epoch, index),
Python/numpy/torch RNGs reseeded for it, their states restored once per batch) and the checked
image opener (regular files only, decompression-bomb limit). Passes alternate ours / plain /
plain / ours ...; the ratio is the median of the passes' ratios paired in time.

    python benchmarks/loader_cpu.py [--repeats 6] [--batches 24]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from timm.data import create_transform
from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder

from accel_trainer import load_recipe
from accel_trainer.tasks import build_task


def cpu_per_batch(loader: DataLoader, batches: int) -> float:
    """Process CPU ms per batch over `batches` batches, after a first one (iterator set-up)."""
    it = iter(loader)
    next(it)
    start = time.process_time()
    for _ in range(batches):
        next(it)
    return (time.process_time() - start) / batches * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--batches", type=int, default=24)
    args = parser.parse_args()
    torch.set_num_threads(1)
    num_train = 32 * (args.batches + 1)
    recipe = load_recipe(
        "recipes/cls.toml", overrides={"data.num_workers": 0, "data.shapes.num_train": num_train}, check_files=False
    )
    task = build_task(recipe)
    train, _ = task.build_datasets()
    ours = task.build_loader(train, batch_size=32, train=True)
    aug = recipe.data.augment
    transform = create_transform(
        recipe.data.img_size, is_training=True, scale=tuple(aug.scale), hflip=aug.hflip, color_jitter=aug.color_jitter
    )
    plain = DataLoader(ImageFolder(train.root, transform), batch_size=32, shuffle=True, drop_last=True)
    pairs: list[tuple[float, float]] = []
    for repeat in range(args.repeats):
        if repeat % 2 == 0:
            mine, base = cpu_per_batch(ours, args.batches), cpu_per_batch(plain, args.batches)
        else:
            base, mine = cpu_per_batch(plain, args.batches), cpu_per_batch(ours, args.batches)
        pairs.append((mine, base))
    ratios = sorted(a / b for a, b in pairs)
    print(f"{len(train)} shapes PNGs at {recipe.data.img_size} px, batch 32, {args.repeats} paired passes")
    print(f"{'':34s}{'ours':>8s}{'plain':>8s}{'ratio':>8s}{'spread':>14s}")
    print(
        f"{'loader CPU per batch (ms)':34s}{statistics.median(a for a, _ in pairs):8.2f}"
        f"{statistics.median(b for _, b in pairs):8.2f}{statistics.median(ratios):8.3f}"
        f"{f'{ratios[0]:.3f}-{ratios[-1]:.3f}':>14s}"
    )


if __name__ == "__main__":
    main()
