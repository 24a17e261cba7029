"""`accel-trainer visualize RECIPE --checkpoint PATH --out DIR`: predicted and true boxes on val images.

Ground truth is drawn in green, predictions in red with their class and score; one PNG per image,
named by its COCO image id, so a glance tells whether a detector learned anything. With `--train`
(no checkpoint) it draws the first training samples of epoch 0 as the loader makes them (mosaic,
resize, flip, jitter, with their boxes), so a user sees what the network is fed.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from torchvision.transforms.v2.functional import to_pil_image

from ..data.sampling import SeededDataset
from ..errors import RecipeError
from ..schema import Recipe
from ..tasks import build_task
from ..tasks.drawing import PREDICTED_COLOUR, TRUE_COLOUR
from ..weights import fit_weights, load_weights

logger = logging.getLogger(__name__)


def visualize_command(recipe: Recipe, weights: str, out: str, num: int, score_thresh: float) -> int:
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
