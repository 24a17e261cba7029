"""`accel-trainer RECIPE` (also `python -m accel_trainer RECIPE`, `accelerate launch -m accel_trainer
RECIPE`): train from a recipe, or with `--eval-only` evaluate once (`evaluate.py`), or with
`--print-recipe` print the resolved recipe without building anything."""

from __future__ import annotations

import argparse
import contextlib
import sys

from ..errors import RecipeError
from ..recipe.reading import dump_toml
from .arguments import add_progress_arg, add_recipe_args, load_args_recipe

DESCRIPTION = "Train from a recipe (also under `accelerate launch -m accel_trainer RECIPE`)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_recipe_args(parser)
    parser.add_argument(
        "--work-dir", help="output folder (default: the recipe's work_dir, else work_dirs/<recipe stem>)"
    )
    parser.add_argument("--print-recipe", action="store_true", help="print the fully resolved recipe as TOML and exit")
    parser.add_argument(
        "--resume",
        nargs="?",
        const=True,
        metavar="PATH",
        help="continue from a checkpoint folder; without PATH, the newest resumable one in work_dir; "
        "'auto': that one, or a fresh start when there is none (for requeued jobs)",
    )
    parser.add_argument("--load-from", metavar="PATH", help="start from these whole-model weights (sets load_from)")
    parser.add_argument("--eval-only", action="store_true", help="evaluate once and write work_dir/eval/metrics.json")
    parser.add_argument(
        "--checkpoint", metavar="PATH", help="with --eval-only: the checkpoint folder or weights file to evaluate"
    )
    add_progress_arg(parser)


def run(args: argparse.Namespace) -> int:
    extra = {"load_from": args.load_from} if args.load_from else None
    # Printing reads no data or weights, so it works on a machine that lacks them.
    recipe = load_args_recipe(args, extra, work_dir=args.work_dir, check_files=not args.print_recipe)
    if args.print_recipe:
        sys.stdout.write(dump_toml(recipe.to_dict()))
        return 0
    if args.checkpoint and not args.eval_only:
        raise RecipeError("--checkpoint goes with --eval-only; to continue training use --resume PATH")
    from .. import optim
    from ..log import discard_unstarted_log, quiet_info
    from ..trainer import Trainer

    trainer = None
    try:
        # Evaluation never steps the optimizer: its param-group table would be noise.
        with quiet_info(optim.__name__) if args.eval_only else contextlib.nullcontext():
            trainer = Trainer(recipe, progress=args.progress)
        if args.eval_only:
            from .evaluate import evaluate_command

            return evaluate_command(trainer, args.checkpoint)
        trainer.fit(resume=args.resume)
        return 0
    except RecipeError:
        if trainer is None or not trainer.run_started:
            discard_unstarted_log()
        raise
    finally:
        # The process ends here: close the process group before the interpreter tears down the
        # communication threads under it (gloo aborted a process at exit otherwise).
        if trainer is not None:
            trainer.accelerator.state.destroy_process_group()
