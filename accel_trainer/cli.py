"""Command line: `accel-trainer RECIPE ...` trains; `accel-trainer COMMAND ...` runs a tool.

User errors (RecipeError) print one line naming the problem and exit with code 2, without a
traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from .errors import RecipeError
from .recipe.reading import dump_toml, parse_override

if TYPE_CHECKING:
    from .recipe.load import LoadedRecipe


def load_recipe(*args: Any, **kwargs: Any) -> LoadedRecipe:
    """`recipe.load.load_recipe`, imported on first use: it pulls in torch, `--help` should not."""
    from .recipe.load import load_recipe as load

    return load(*args, **kwargs)


def _overrides(items: Sequence[str] | None) -> dict:
    return dict(parse_override(item) for item in items or [])


def add_recipe_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="recipe TOML file")
    parser.add_argument(
        "--set",
        dest="overrides",
        metavar="KEY=VALUE",
        nargs="+",
        action="extend",
        help="override recipe keys, VALUE in TOML syntax: --set optimizer.lr=0.01 'data.train.root=\"/data/x\"'",
    )


def add_progress_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bars on stdout (default: when stdout is a terminal)",
    )


def version_text() -> str:
    """The package and the versions that decide its behaviour, read from metadata (nothing imported)."""
    from importlib.metadata import PackageNotFoundError, version

    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    deps = ", ".join(f"{name} {installed(name)}" for name in ("torch", "torchvision", "timm", "accelerate"))
    from . import __version__

    return f"accel-trainer {__version__} ({deps}; Python {sys.version.split()[0]})"


class VersionAction(argparse.Action):
    """`--version`, its text read only when asked for."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help="print the versions and exit")

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        print(version_text())
        parser.exit()


def train_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="accel-trainer",
        description="Train from a recipe (also under `accelerate launch -m accel_trainer RECIPE`). "
        f"Tools: accel-trainer {{{','.join(COMMANDS)}}} --help.",
    )
    parser.add_argument("--version", action=VersionAction)
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
    return parser


def run_train(args: argparse.Namespace) -> int:
    overrides = _overrides(args.overrides)
    if args.load_from:
        overrides["load_from"] = args.load_from
    # Printing reads no data or weights, so it works on a machine that lacks them.
    recipe = load_recipe(args.recipe, overrides, args.work_dir, check_files=not args.print_recipe)
    if args.print_recipe:
        sys.stdout.write(dump_toml(recipe.to_dict()))
        return 0
    if args.checkpoint and not args.eval_only:
        raise RecipeError("--checkpoint goes with --eval-only; to continue training use --resume PATH")
    from .trainer import Trainer

    trainer = Trainer(recipe, progress=args.progress)
    try:
        if args.eval_only:
            from .commands.evaluate import evaluate_command

            return evaluate_command(trainer, args.checkpoint)
        trainer.fit(resume=args.resume)
        return 0
    finally:
        # The process ends here: close the process group before the interpreter tears down the
        # communication threads under it (gloo aborted a process at exit otherwise).
        trainer.accelerator.state.destroy_process_group()


def schedule_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="accel-trainer schedule",
        description="Compute a recipe's lr and momentum schedule without building the model or data.",
    )
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
    return parser


def run_schedule(args: argparse.Namespace) -> int:
    from .commands.schedule import schedule_command

    # With --iters-per-epoch the dataset is never read: a laptop can plot a cluster recipe's schedule.
    recipe = load_recipe(args.recipe, _overrides(args.overrides), check_files=args.iters_per_epoch is None)
    return schedule_command(recipe, args.iters_per_epoch, args.csv, args.png, args.num_processes)


def export_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="accel-trainer export",
        description="Write a checkpoint's weights as one safetensors file, or the model as ONNX.",
    )
    parser.add_argument("checkpoint", help="checkpoint folder, e.g. work_dirs/cls/checkpoints/epoch_8")
    parser.add_argument("--out", required=True, help="output .safetensors or .onnx file (the suffix picks the format)")
    parser.add_argument(
        "--check", action="store_true", help="ONNX: run onnxruntime on a few val images and compare with PyTorch"
    )
    parser.add_argument(
        "--backbone-only", action="store_true", help="only the timm backbone, loadable by timm.create_model"
    )
    parser.add_argument("--ema", action="store_true", help="export the EMA weights instead of the raw ones")
    add_progress_arg(parser)
    return parser


def run_export(args: argparse.Namespace) -> int:
    from .commands.export import export_command

    return export_command(args.checkpoint, args.out, args.backbone_only, args.ema, args.check, args.progress)


def predict_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="accel-trainer predict",
        description="Run a checkpoint on images: one JSON line per image, in input order (also under accelerate launch).",
    )
    parser.add_argument(
        "checkpoint", help="checkpoint folder (its recipe.toml says how to build the model and preprocess)"
    )
    parser.add_argument(
        "inputs", nargs="+", metavar="INPUT", help="image files, folders (searched recursively) or globs"
    )
    parser.add_argument("--out", required=True, metavar="FILE.jsonl", help="output JSON lines file")
    parser.add_argument("--draw", metavar="DIR", help="also write each image with its boxes / top label drawn")
    parser.add_argument(
        "--batch-size", type=int, help="images per forward pass (default: the recipe's data.batch_size)"
    )
    parser.add_argument(
        "--score-thresh", type=float, help="detection: drop boxes scoring below this (default: keep all)"
    )
    parser.add_argument(
        "--topk", type=int, default=5, help="classification: labels per image (default 5, at most num_classes)"
    )
    parser.add_argument("--ema", action="store_true", help="use the checkpoint's EMA weights")
    add_progress_arg(parser)
    return parser


def run_predict(args: argparse.Namespace) -> int:
    from .commands.predict import predict_command

    return predict_command(
        args.checkpoint,
        args.inputs,
        args.out,
        args.draw,
        args.batch_size,
        args.score_thresh,
        args.topk,
        args.ema,
        args.progress,
    )


def visualize_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="accel-trainer visualize",
        description="Draw true (green) and predicted (red) boxes on val images of a detection recipe, one PNG each.",
    )
    add_recipe_args(parser)
    parser.add_argument("--checkpoint", metavar="PATH", help="checkpoint folder or weights file (not with --train)")
    parser.add_argument(
        "--train", action="store_true", help="draw augmented training samples (what the network is fed) instead"
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for the PNGs")
    parser.add_argument("--num", type=int, default=8, help="how many images (default 8)")
    parser.add_argument(
        "--score-thresh", type=float, default=0.3, help="hide predictions scoring below this (default 0.3)"
    )
    return parser


def run_visualize(args: argparse.Namespace) -> int:
    from .commands.visualize import visualize_command

    recipe = load_recipe(args.recipe, _overrides(args.overrides))
    if args.train:
        from .commands.visualize import visualize_train_command

        return visualize_train_command(recipe, args.out, args.num)
    if not args.checkpoint:
        raise RecipeError(
            "visualize needs --checkpoint PATH (predictions on val images) or --train (augmented training samples)"
        )
    return visualize_command(recipe, args.checkpoint, args.out, args.num, args.score_thresh)


def import_mmcv_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="accel-trainer import-mmcv",
        description="Convert an mmcv/mmdet 1.x Python config's runtime sections to recipe TOML, without running the config.",
    )
    parser.add_argument("config", help="mmcv config .py file (its _base_ files are followed)")
    parser.add_argument("--out", help="write the recipe TOML here (default: print it)")
    return parser


def run_import_mmcv(args: argparse.Namespace) -> int:
    from .commands.import_mmcv import import_mmcv_command

    return import_mmcv_command(args.config, args.out)


def plot_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="accel-trainer plot",
        description="Plot train loss, lr and val metrics of each work dir's latest run, across the *.log.json files of the "
        "runs it resumed (needs the 'plot' extra).",
    )
    parser.add_argument("work_dirs", nargs="+", metavar="WORK_DIR", help="work dirs (or .log.json files) to compare")
    parser.add_argument("--out", default="curves.png", help="output image (default: curves.png)")
    parser.add_argument(
        "--keys", help="comma-separated keys, one subplot each (default: loss, lr and every val metric)"
    )
    parser.add_argument(
        "--smooth", type=float, default=0.6, help="EMA weight for train curves, 0 to turn off (default: 0.6)"
    )
    return parser


def run_plot(args: argparse.Namespace) -> int:
    from .commands.plot import plot_command

    return plot_command(args.work_dirs, args.out, args.keys, args.smooth)


COMMANDS: dict[str, tuple[Callable[[], argparse.ArgumentParser], Callable[[argparse.Namespace], int]]] = {
    "schedule": (schedule_parser, run_schedule),
    "export": (export_parser, run_export),
    "predict": (predict_parser, run_predict),
    "visualize": (visualize_parser, run_visualize),
    "import-mmcv": (import_mmcv_parser, run_import_mmcv),
    "plot": (plot_parser, run_plot),
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in COMMANDS:
        make_parser, run = COMMANDS[argv[0]]
        argv = argv[1:]
    else:
        make_parser, run = train_parser, run_train
    args = make_parser().parse_args(argv)
    try:
        return run(args)
    except RecipeError as exc:
        print(f"accel-trainer: error: {exc}", file=sys.stderr)
        return RecipeError.exit_code
    except KeyboardInterrupt:
        print("accel-trainer: interrupted", file=sys.stderr)
        return 130
