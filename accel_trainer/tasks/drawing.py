"""Boxes drawn on an image: the true ones and the detections, in colours `visualize` names."""

from __future__ import annotations

import torch
from torchvision.utils import draw_bounding_boxes

TRUE_COLOUR, PREDICTED_COLOUR = "lime", "red"


def draw_boxes(
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
