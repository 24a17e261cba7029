"""`accel-trainer visualize RECIPE --checkpoint PATH --out DIR`: predicted and true boxes on val images.

Ground truth is drawn in green, predictions in red with their class and score; one PNG per image,
named by its COCO image id, so a glance tells whether a detector learned anything. With `--train`
(no checkpoint) it draws the first training samples of epoch 0 as the loader makes them (mosaic,
resize, flip, jitter, with their boxes), so a user sees what the network is fed.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import RecipeError
from .arguments import add_recipe_args, load_args_recipe

if TYPE_CHECKING:
    from ..recipe.root import Recipe

logger = logging.getLogger(__name__)

DESCRIPTION = "Draw true (green) and predicted (red) boxes on val images of a detection recipe, one PNG each."


def visualize_command(recipe: Recipe, weights: str, out: str, num: int, score_thresh: float) -> int:
    from torchvision.transforms.v2.functional import to_pil_image

    from ..checkpoint.weights import fit_weights, load_weights
    from ..tasks import build_task
    from ..tasks.drawing import PREDICTED_COLOUR, TRUE_COLOUR

    task = build_task(recipe)
    task.check_visualize()
    if num <= 0:
        raise RecipeError(f"--num must be positive, got {num}")
    model = task.build_model()
    fit_weights(model, load_weights(weights), source=weights, revise_keys=recipe.load_options.key_renames, strict=True)
    model.eval()
    val: Any = task.build_datasets()[1]  # the task's own dataset: sized, with `classes`
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = 0
    for index in range(len(val)):
        if written == num:
            break
        image, truth = val[index]
        if image is None:
            continue
        canvas = task.draw_prediction(model, image, truth, val.classes, score_thresh)
        to_pil_image(canvas).save(out_dir / f"{truth['image_id']}.png")
        written += 1
    logger.info(
        "wrote %d images to %s (true boxes %s, predictions %s)", written, out_dir, TRUE_COLOUR, PREDICTED_COLOUR
    )
    print(f"wrote {written} images to {out_dir}")
    return 0


def visualize_train_command(recipe: Recipe, out: str, num: int) -> int:
    """Augmented training samples of epoch 0, drawn from the same seeded pipeline training uses."""
    from torchvision.transforms.v2.functional import to_pil_image

    from ..data.sampling import SeededDataset
    from ..tasks import build_task

    if num <= 0:
        raise RecipeError(f"--num must be positive, got {num}")
    task = build_task(recipe)
    train: Any = task.build_datasets()[0]  # the task's own dataset: sized, with `classes`
    seeded = SeededDataset(train, recipe.accelerate.seed)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = 0
    for index in range(min(num, len(train))):
        image, target = seeded[(0, index)]
        if image is None:
            continue
        canvas = task.draw_sample(image, target, train.classes)
        to_pil_image(canvas).save(out_dir / f"train_{index}.png")
        written += 1
    print(f"wrote {written} augmented training samples to {out_dir}")
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
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


def run(args: argparse.Namespace) -> int:
    recipe = load_args_recipe(args)
    if args.train:
        return visualize_train_command(recipe, args.out, args.num)
    if not args.checkpoint:
        raise RecipeError(
            "visualize needs --checkpoint PATH (predictions on val images) or --train (augmented training samples)"
        )
    return visualize_command(recipe, args.checkpoint, args.out, args.num, args.score_thresh)
