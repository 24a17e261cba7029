"""Previewing a run's schedule without building anything: per-iteration rows, CSV and PNG."""
from __future__ import annotations

import csv
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from .plotting import figure_class
from .schedules import LrSchedule, MomentumSchedule, Progress, apply_schedules

Row = tuple[int, int, float, float | None]



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
    """(iter, epoch, lr, momentum) for every train iteration 0..max_iters-1 of the first param group.

    Goes through `apply_schedules` on a one-group stand-in optimizer, so the preview is what training does.
    """
    if max_iters is None:
        if max_epochs is None:
            raise ValueError("schedule_rows needs max_epochs or max_iters")
        max_iters = max_epochs * iters_per_epoch
    if max_epochs is None:
        max_epochs = math.ceil(max_iters / iters_per_epoch)
    lr = LrSchedule.from_config(lr_cfg, iter_based=iter_based)
    momentum = MomentumSchedule.from_config(momentum_cfg)
    group: dict[str, Any] = {"lr": base_lr}
    if base_momentum is not None:
        group["momentum"] = base_momentum
    optimizer = SimpleNamespace(param_groups=[group])
    rows: list[Row] = []
    for it in range(max_iters):
        p = Progress(it // iters_per_epoch, it, iters_per_epoch, max_epochs, max_iters)
        apply_schedules(optimizer, lr, momentum, p)
        rows.append((it, p.epoch, group["lr"], group.get("momentum")))
    return rows


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


def plot_schedule_png(rows: Sequence[Row], iters_per_epoch: int, path: str | Path, title: str = "") -> None:
    """lr (and momentum, when any) against iteration, with grey lines at epoch boundaries."""
    Figure = figure_class("plotting the schedule")
    iters = [r[0] for r in rows]
    series = [("lr", [r[2] for r in rows])]
    if any(r[3] is not None for r in rows):
        series.append(("momentum", [math.nan if r[3] is None else r[3] for r in rows]))
    fig = Figure(figsize=(10, 3 * len(series) + 0.5), layout="constrained")
    axes = fig.subplots(len(series), 1, sharex=True, squeeze=False)[:, 0]
    boundaries = list(range(iters_per_epoch, len(rows), iters_per_epoch))
    for ax, (label, ys) in zip(axes, series):
        ax.vlines(boundaries, 0, 1, transform=ax.get_xaxis_transform(), colors="0.85", linewidth=0.6, zorder=0)
        ax.plot(iters, ys, linewidth=1.2)
        ax.set_ylabel(label)
        ax.grid(axis="y", alpha=0.3)
    axes[-1].set_xlabel("iteration (grey lines: epoch boundaries)")
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=100)
