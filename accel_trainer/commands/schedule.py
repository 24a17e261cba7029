"""`accel-trainer schedule`: the lr/momentum of every iteration, before any training."""
from __future__ import annotations

import logging
import math

from ..errors import RecipeError
from ..optim import scale_lr
from ..schedule_preview import plot_schedule_png, schedule_rows, write_schedule_csv
from ..schema import Recipe

logger = logging.getLogger("accel_trainer")


def base_momentum(optimizer_cfg: dict) -> float | None:
    """The momentum the schedule scales: SGD-style `momentum` or Adam-style `betas[0]`.

    Read from an optimizer built on a stand-in parameter, so the optimizer's own defaults
    (Adam's betas = (0.9, 0.999)) count when the recipe leaves them out.
    """
    import torch

    from ..optim import build_optimizer

    optimizer, _ = build_optimizer(torch.nn.Linear(1, 1), optimizer_cfg)
    group = optimizer.param_groups[0]
    if "momentum" in group:
        return float(group["momentum"])
    if "betas" in group:
        return float(group["betas"][0])
    return None


def dataset_iters_per_epoch(recipe: Recipe) -> int:
    """Optimizer steps per epoch on one process, from the recipe's training set."""
    from ..tasks import build_task

    task = build_task(recipe)
    train, _ = task.build_datasets()
    # The training loader itself (built, never iterated) counts the batches, short last one or not.
    batches = len(task.build_loader(train, batch_size=recipe.data.batch_size, train=True))
    return math.ceil(batches / recipe.accelerate.gradient_accumulation_steps)


def schedule_command(recipe: Recipe, iters_per_epoch: int | None, csv: str | None, png: str | None) -> int:
    if iters_per_epoch is None:
        iters_per_epoch = dataset_iters_per_epoch(recipe)
    if iters_per_epoch <= 0:
        raise RecipeError(f"--iters-per-epoch must be positive, got {iters_per_epoch}")
    lr = float(recipe.optimizer["lr"])
    if recipe.auto_scale_lr.enable:
        lr = scale_lr(
            lr,
            num_processes=1,
            batch_size=recipe.data.batch_size,
            accumulation=recipe.accelerate.gradient_accumulation_steps,
            base_batch_size=recipe.auto_scale_lr.base_batch_size,
        )
    if recipe.by_epoch:
        max_epochs, max_iters = recipe.runner.max_epochs, recipe.runner.max_epochs * iters_per_epoch
    else:
        max_iters = recipe.runner.max_iters
        max_epochs = math.ceil(max_iters / iters_per_epoch)
    rows = schedule_rows(
        recipe.lr_config, recipe.momentum_config, lr, base_momentum(recipe.optimizer), iters_per_epoch, max_epochs, max_iters,
        iter_based=not recipe.by_epoch,
    )
    if csv:
        write_schedule_csv(rows, csv)
    if png:
        plot_schedule_png(rows, iters_per_epoch, png, title=recipe.source)
    if not csv and not png:
        write_schedule_csv(rows, "-")
    return 0
