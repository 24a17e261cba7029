"""YOLO's 4-image mosaic (as mmdet 3's `Mosaic` and YOLOX describe it), written for tv_tensors.

A 2s x 2s canvas (grey 114, s = the detector's `min_size`) gets a random centre in [0.5 s, 1.5 s]
on both axes; the sample and three others drawn at random, each resized so its longer side fits s,
meet at that centre (top-left, top-right, bottom-left, bottom-right). Boxes move with their image,
are clipped to the canvas, and boxes under 1 px are dropped. Every draw comes from torch's CPU
generator, which the loader seeds per (seed, epoch, sample): runs stay resumable bit-exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as F

PAD_VALUE = 114
# Tries to find a readable partner image when some are skipped (skip_bad_images).
MAX_DRAWS = 10


class Mosaic:
    """With probability `prob`, replace a sample by a mosaic of it and three others; never in the
    epochs from `until_epoch` on (YOLOX's final epochs without mosaic)."""

    def __init__(self, prob: float, size: int, until_epoch: int) -> None:
        self.prob = prob
        self.size = size
        self.until_epoch = until_epoch

    def applies(self, epoch: int) -> bool:
        # Drawn even when off, so turning mosaic off does not shift the other augmentations' draws.
        draw = torch.rand(()).item()
        return epoch < self.until_epoch and draw < self.prob

    def __call__(
        self, image: Any, target: dict[str, Any], load: Callable[[int], tuple[Any, dict]], length: int
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        s = self.size
        cx = int(torch.empty(()).uniform_(0.5 * s, 1.5 * s).item())
        cy = int(torch.empty(()).uniform_(0.5 * s, 1.5 * s).item())
        samples = [(image, target)]
        for _ in range(MAX_DRAWS * 3):
            if len(samples) == 4:
                break
            other = load(int(torch.randint(length, ()).item()))
            if other[0] is not None:
                samples.append(other)
        while len(samples) < 4:  # every partner unreadable: the sample fills the rest
            samples.append((image, target))
        canvas = torch.full((3, 2 * s, 2 * s), PAD_VALUE, dtype=torch.uint8)
        boxes, labels = [], []
        for corner, (img, tgt) in enumerate(samples):
            pixels = F.pil_to_tensor(img) if not isinstance(img, torch.Tensor) else img
            h, w = pixels.shape[-2:]
            ratio = min(s / h, s / w)
            h, w = max(1, round(h * ratio)), max(1, round(w * ratio))
            pixels = F.resize(pixels, [h, w], antialias=True)
            # Where the image goes on the canvas (x1, y1, x2, y2) and which part of it is kept.
            left, top = corner in (0, 2), corner in (0, 1)
            x1, x2 = (max(cx - w, 0), cx) if left else (cx, min(cx + w, 2 * s))
            y1, y2 = (max(cy - h, 0), cy) if top else (cy, min(cy + h, 2 * s))
            cw, ch = x2 - x1, y2 - y1
            px, py = (w - cw if left else 0), (h - ch if top else 0)
            canvas[:, y1:y2, x1:x2] = pixels[:, py : py + ch, px : px + cw]
            moved = tgt["boxes"].as_subclass(torch.Tensor) * ratio + torch.tensor([x1 - px, y1 - py] * 2)
            boxes.append(moved)
            labels.append(tgt["labels"])
        all_boxes = torch.cat(boxes).clamp(0, 2 * s)
        keep = ((all_boxes[:, 2] - all_boxes[:, 0]) >= 1) & ((all_boxes[:, 3] - all_boxes[:, 1]) >= 1)
        return canvas, {
            "boxes": tv_tensors.BoundingBoxes(all_boxes[keep], format="XYXY", canvas_size=(2 * s, 2 * s)),
            "labels": torch.cat(labels)[keep],
            "image_id": target["image_id"],
        }
