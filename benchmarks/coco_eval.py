"""COCO bbox evaluation time: faster_coco_eval against pycocotools, same ground truth and detections.

Synthetic COCO-like data (80 categories, `--boxes` objects per image of all sizes, `--dets`
detections per image: jittered copies of the truth and random boxes, random scores), evaluated by
`accel_trainer.data.coco.coco_bbox_metrics` with each backend; prints the median wall time of
`--repeats` runs, the ratio, and the largest metric difference.

    python benchmarks/coco_eval.py [--images 5000] [--boxes 7] [--dets 100] [--repeats 3]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import random
import statistics
import time

from pycocotools.coco import COCO

from accel_trainer.data.coco import coco_bbox_metrics


def synthetic(images: int, boxes: int, dets: int, seed: int = 0) -> tuple[COCO, list[dict]]:
    rng = random.Random(seed)
    annotations, results = [], []
    for image_id in range(1, images + 1):
        for _ in range(boxes):
            w, h = rng.uniform(4, 300), rng.uniform(4, 300)
            x, y = rng.uniform(0, 640 - w), rng.uniform(0, 480 - h)
            cat = rng.randint(1, 80)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": cat,
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
            results.append(
                {
                    "image_id": image_id,
                    "category_id": cat,
                    "score": rng.random(),
                    "bbox": [
                        x + rng.gauss(0, 3),
                        y + rng.gauss(0, 3),
                        w * rng.uniform(0.9, 1.1),
                        h * rng.uniform(0.9, 1.1),
                    ],
                }
            )
        for _ in range(dets - boxes):
            w, h = rng.uniform(4, 300), rng.uniform(4, 300)
            results.append(
                {
                    "image_id": image_id,
                    "category_id": rng.randint(1, 80),
                    "score": rng.random() * 0.5,
                    "bbox": [rng.uniform(0, 640 - w), rng.uniform(0, 480 - h), w, h],
                }
            )
    gt = COCO()
    gt.dataset = {
        "images": [{"id": i, "width": 640, "height": 480} for i in range(1, images + 1)],
        "annotations": annotations,
        "categories": [{"id": c, "name": str(c)} for c in range(1, 81)],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    return gt, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--boxes", type=int, default=7)
    parser.add_argument("--dets", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    gt, results = synthetic(args.images, args.boxes, args.dets)
    ids = list(range(1, args.images + 1))
    times: dict[str, list[float]] = {"pycocotools": [], "faster_coco_eval": []}
    metrics = {}
    for _ in range(args.repeats):
        for backend in times:
            start = time.perf_counter()
            metrics[backend], _ = coco_bbox_metrics(gt, results, ids, backend)
            times[backend].append(time.perf_counter() - start)
    slow, fast = (statistics.median(times[b]) for b in times)
    diff = max(abs(metrics["pycocotools"][k] - metrics["faster_coco_eval"][k]) for k in metrics["pycocotools"])
    print(f"{args.images} images, {args.boxes} objects and {args.dets} detections per image, median of {args.repeats}")
    print(
        f"pycocotools {slow:.2f} s, faster_coco_eval {fast:.2f} s, ratio {fast / slow:.3f}, max metric difference {diff:.1e}"
    )


if __name__ == "__main__":
    main()
