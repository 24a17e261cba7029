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

import torch
from torchvision.transforms.v2.functional import to_pil_image
from torchvision.utils import draw_bounding_boxes

from ..checkpoint.weights import fit_weights, load_weights
from ..data.sampling import SeededDataset
from ..errors import RecipeError
from ..schema import Recipe
from ..tasks import build_task

logger = logging.getLogger(__name__)

TRUE_COLOUR, PREDICTED_COLOUR = "lime", "red"


def draw_image(
    image: torch.Tensor, truth: dict, detections: dict, classes: list[str], score_thresh: float
) -> torch.Tensor:
    """uint8 CHW canvas with the true boxes and the detections scoring at least `score_thresh`."""
    canvas = (image.clamp(0, 1) * 255).to(torch.uint8)
    if len(truth["boxes"]):
        names = [classes[int(i)] for i in truth["labels"]]
        canvas = draw_bounding_boxes(canvas, truth["boxes"], labels=names, colors=TRUE_COLOUR, width=2)
    keep = detections["scores"] >= score_thresh
    if keep.any():
        names = [
            f"{classes[int(i)]} {float(s):.2f}" for i, s in zip(detections["labels"][keep], detections["scores"][keep])
        ]
        canvas = draw_bounding_boxes(canvas, detections["boxes"][keep], labels=names, colors=PREDICTED_COLOUR, width=1)
    return canvas


def visualize_command(recipe: Recipe, weights: str, out: str, num: int, score_thresh: float) -> int:
    if recipe.model.task != "detection":
        raise RecipeError(
            f'visualize draws boxes; {recipe.source} has model.task = {recipe.model.task!r}, not "detection"'
        )
    if num <= 0:
        raise RecipeError(f"--num must be positive, got {num}")
    task = build_task(recipe)
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
        with torch.no_grad():
            (detections,) = model([image])
        detections = {**detections, "labels": detections["labels"] - task.label_offset}
        canvas = draw_image(image, truth, detections, val.classes, score_thresh)
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
    detection = recipe.model.task == "detection"
    written = 0
    for index in range(min(num, len(train))):
        image, target = seeded[(0, index)]
        if image is None:
            continue
        if detection:
            empty = {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64)}
            canvas = draw_image(image, target, empty, train.classes, 1.0)
        else:  # a normalised tensor: back to [0, 1] with timm's mean / std for the picture
            from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

            mean, std = (
                torch.tensor(IMAGENET_DEFAULT_MEAN)[:, None, None],
                torch.tensor(IMAGENET_DEFAULT_STD)[:, None, None],
            )
            canvas = ((image * std + mean).clamp(0, 1) * 255).to(torch.uint8)
        to_pil_image(canvas).save(out_dir / f"train_{index}.png")
        written += 1
    print(f"wrote {written} augmented training samples to {out_dir}")
    return 0
