"""Previewing a run's schedule without building anything: per-iteration rows and CSV."""

from __future__ import annotations

import csv
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from .apply import ScheduleSpec, apply_schedules, rescale_initial_lr
from .run_length import RunLength

Row = tuple[int, int, float, float | None]


def run_rows(
    spec: ScheduleSpec,
    base_lr: float,
    base_momentum: float | None,
    run: RunLength,
    *,
    lr_follows_batch: bool = False,
) -> list[Row]:
    """(iter, epoch, lr, momentum) for every train iteration of `run`, first param group.

    Goes through `apply_schedules` on a one-group stand-in optimizer, so the preview is what
    training does; `base_lr` is the lr the optimizer is built with (at `data.batch_size`), and
    with `lr_follows_batch` (auto_scale_lr) a stage of another batch size scales it as training does.
    """
    group: dict[str, Any] = {"lr": base_lr}
    if base_momentum is not None:
        group["momentum"] = base_momentum
    optimizer = SimpleNamespace(param_groups=[group])
    rows: list[Row] = []
    batch_size = run.batch_sizes[-1]
    for it in range(run.max_iters):
        epoch = run.epoch_of(it)
        if lr_follows_batch and run.batch_sizes[epoch] != batch_size:
            rescale_initial_lr(optimizer.param_groups, batch_size, run.batch_sizes[epoch])
        batch_size = run.batch_sizes[epoch]
        apply_schedules(optimizer, spec.lr, spec.momentum, run.progress(epoch, it))
        rows.append((it, epoch, group["lr"], group.get("momentum")))
    return rows


def schedule_rows(
    lr_cfg: Mapping | None,
    momentum_cfg: Mapping | None,
    base_lr: float,
    base_momentum: float | None,
    iters_per_epoch: int,
    max_epochs: int | None,
    max_iters: int | None,
    *,
    iter_based: bool = False,
) -> list[Row]:
    """`run_rows` for a run whose epochs all have `iters_per_epoch` iterations."""
    if max_iters is None:
        if max_epochs is None:
            raise ValueError("schedule_rows needs max_epochs or max_iters")
        max_iters = max_epochs * iters_per_epoch
    if max_epochs is None:
        max_epochs = math.ceil(max_iters / iters_per_epoch)
    run = RunLength((iters_per_epoch,) * max_epochs, max_iters, (1,) * max_epochs)
    spec = ScheduleSpec.from_config(lr_cfg, momentum_cfg, iter_based=iter_based)
    return run_rows(spec, base_lr, base_momentum, run)


def write_schedule_csv(rows: Sequence[Row], path: str | Path) -> None:
    """CSV with header `iter,epoch,lr,momentum` (empty momentum cell when there is none); "-" is stdout."""

    def write(stream: Any) -> None:
        writer = csv.writer(stream, lineterminator="\n")
        writer.writerow(["iter", "epoch", "lr", "momentum"])
        writer.writerows((it, ep, repr(lr), "" if m is None else repr(m)) for it, ep, lr, m in rows)

    if str(path) == "-":
        write(sys.stdout)
        return
    with open(path, "w", newline="") as f:
        write(f)
