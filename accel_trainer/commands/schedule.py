"""`accel-trainer schedule`: the lr/momentum of every iteration, before any training.

The run length and the auto-scaled lr come from the same code the Trainer uses, for the number
of processes the run will have (a freeze stage with its own batch size included).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import RecipeError
from ..plotting import plot_schedule_png
from ..schedules.preview import run_rows, write_schedule_csv
from ..schedules.run_length import RunLength
from .arguments import add_recipe_args, load_args_recipe

if TYPE_CHECKING:
    from ..recipe.load import LoadedRecipe
    from ..recipe.root import Recipe

DESCRIPTION = "Compute a recipe's lr and momentum schedule without building the model or data."


def launcher_num_processes() -> tuple[int, str]:
    """How many processes the run will have, and where that came from: a launcher's WORLD_SIZE,
    else the default `accelerate config` file, else 1."""
    if "WORLD_SIZE" in os.environ:
        return int(os.environ["WORLD_SIZE"]), "WORLD_SIZE"
    from accelerate.commands.config import default_config_file
    from accelerate.commands.config.config_args import load_config_from_file

    if Path(default_config_file).is_file():
        return int(load_config_from_file(default_config_file).num_processes or 1), default_config_file
    return 1, "no launcher and no accelerate config"


def dataset_steps(recipe: Recipe, num_processes: int):
    """`steps_at(batch_size)` from the recipe's training set: the loader is built, never iterated."""
    from ..data.loader import batches_per_process
    from ..tasks import build_task

    task = build_task(recipe)
    train, _ = task.build_datasets()

    def steps_at(batch_size: int) -> int:
        loader = task.build_loader(train, batch_size=batch_size, train=True)
        return math.ceil(batches_per_process(loader, num_processes) / recipe.accelerate.gradient_accumulation_steps)

    return steps_at


def dataset_iters_per_epoch(recipe: Recipe, num_processes: int = 1) -> int:
    """Optimizer steps per epoch at `data.batch_size`, from the recipe's training set."""
    return dataset_steps(recipe, num_processes)(recipe.data.batch_size)


def schedule_command(
    recipe: LoadedRecipe,
    iters_per_epoch: int | None,
    csv: str | None,
    png: str | None,
    num_processes: int | None = None,
) -> int:
    """`iters_per_epoch` (at `data.batch_size`, per process) skips reading the dataset; a freeze
    stage with another batch size then gets proportionally more or fewer iterations."""
    from ..optim import auto_scaled_lr

    if num_processes is None:
        num_processes, source = launcher_num_processes()
        print(f"accel-trainer: schedule for {num_processes} process(es) ({source})", file=sys.stderr)
    if num_processes <= 0:
        raise RecipeError(f"--num-processes must be positive, got {num_processes}")
    if iters_per_epoch is not None and iters_per_epoch <= 0:
        raise RecipeError(f"--iters-per-epoch must be positive, got {iters_per_epoch}")
    full = recipe.data.batch_size
    if iters_per_epoch is None:
        steps_at = dataset_steps(recipe, num_processes)
    else:
        given = iters_per_epoch

        def steps_at(batch_size: int) -> int:
            return math.ceil(given * full / batch_size)

    run = RunLength.of_recipe(recipe, steps_at)
    specs = recipe.specs
    warning = run.warmup_overrun(specs.schedule.lr)
    if warning:
        print(f"accel-trainer: warning: {warning}", file=sys.stderr)
    rows = run_rows(
        specs.schedule,
        auto_scaled_lr(recipe, num_processes, full),
        specs.optimizer.base_momentum,
        run,
        lr_follows_batch=recipe.auto_scale_lr.enable,
    )
    if csv:
        write_schedule_csv(rows, csv)
    if png:
        plot_schedule_png(rows, png, title=recipe.source)
    if not csv and not png:
        write_schedule_csv(rows, "-")
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_recipe_args(parser)
    parser.add_argument(
        "--iters-per-epoch",
        type=int,
        help="optimizer steps per epoch per process at data.batch_size (default: from the recipe's dataset)",
    )
    parser.add_argument(
        "--num-processes",
        type=int,
        help="processes the run will use (default: the launcher's WORLD_SIZE, else the accelerate config, else 1)",
    )
    parser.add_argument("--csv", help="write iter,epoch,lr,momentum rows to this file")
    parser.add_argument("--png", help="plot lr and momentum to this PNG (needs the 'plot' extra)")


def run(args: argparse.Namespace) -> int:
    # With --iters-per-epoch the dataset is never read: a laptop can plot a cluster recipe's schedule.
    recipe = load_args_recipe(args, check_files=args.iters_per_epoch is None)
    return schedule_command(recipe, args.iters_per_epoch, args.csv, args.png, args.num_processes)
