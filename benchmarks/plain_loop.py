"""The hand-written Accelerate loop `overhead.py --process` times as a whole process: ImageFolder
data, timm model, AdamW without decay on norm/bias, one epoch of linear warmup times a cosine,
a loss line every `--log-interval` iterations; no validation, no checkpoints. It imports only what
such a script imports (torch, torchvision, timm, accelerate), never accel_trainer.

    python benchmarks/plain_loop.py TRAIN_DIR [--epochs 3] [--img-size 32] [--batch-size 32] [--num-workers 1]
"""

from __future__ import annotations

import argparse
import math
import time

import timm
import torch
from accelerate import Accelerator
from timm.data import create_transform
from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("train_dir")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--img-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-workers", type=int, default=1)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--log-interval", type=int, default=32)
    args = parser.parse_args()
    accelerator = Accelerator(cpu=True)
    transform = create_transform(args.img_size, is_training=True, scale=(0.5, 1.0), hflip=0.5, color_jitter=0.0)
    loader = DataLoader(
        ImageFolder(args.train_dir, transform), batch_size=args.batch_size, shuffle=True, num_workers=args.num_workers
    )
    model = timm.create_model("resnest14d", num_classes=4)
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    optimizer = torch.optim.AdamW(
        [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}], lr=args.lr, weight_decay=0.05
    )
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    per_epoch = len(loader)

    def factor(it: int) -> float:
        cosine = 0.5 * (1 + math.cos(math.pi * (it // per_epoch) / args.epochs))
        return cosine * (1 - (1 - it / per_epoch) * 0.9) if it < per_epoch else cosine

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    later_epochs = 0.0  # wall seconds of the epochs after the first, for the per-iteration figure
    for epoch in range(args.epochs):
        tick = time.perf_counter()
        model.train()
        for i, (images, targets) in enumerate(loader, 1):
            loss = criterion(model(images), targets)
            accelerator.backward(loss)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            if i % args.log_interval == 0:
                accelerator.print(f"epoch {epoch + 1} iter {i}/{per_epoch} loss {loss.item():.4f}")
        if epoch:
            later_epochs += time.perf_counter() - tick
    print(f"seconds per iteration after the first epoch: {later_epochs / (per_epoch * (args.epochs - 1)):.6f}")


if __name__ == "__main__":
    main()
