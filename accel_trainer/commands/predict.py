"""`accel-trainer predict CKPT INPUT... --out FILE.jsonl`: one JSON record per image, in input order.

INPUT is an image file, a folder (searched recursively) or a glob. Under `accelerate launch` each
process predicts a contiguous share of the images once; the main process writes every record in
input order. An unreadable image (also one that is not a regular file, or is over Pillow's
decompression-bomb limit) is named on stderr and skipped (no record), and the count is printed at
the end. The output paths are checked before the model is loaded.
"""

from __future__ import annotations

import argparse
import glob
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from ..errors import RecipeError
from ..files import atomic_write, check_output_file, writable_folder
from .arguments import add_progress_arg

logger = logging.getLogger(__name__)

DESCRIPTION = "Run a checkpoint on images: one JSON line per image, in input order (also under accelerate launch)."


def expand_inputs(inputs: list[str]) -> list[Path]:
    """Image files from files, folders (recursively, sorted) and globs, in the order given."""
    from torchvision.datasets.folder import IMG_EXTENSIONS

    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        # Image names that are not regular files (a FIFO, a broken link) are kept: reading them
        # refuses them, so they are named and counted as skipped.
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if not p.is_dir() and p.suffix.lower() in IMG_EXTENSIONS))
        elif path.exists():
            files.append(path)
        elif glob.has_magic(item):
            matches = sorted(Path(p) for p in glob.glob(item, recursive=True) if not Path(p).is_dir())
            if not matches:
                raise RecipeError(f"input {item!r}: the pattern matches no file")
            files.extend(matches)
        else:
            raise RecipeError(f"input {item!r}: no such file or folder")
    if not files:
        raise RecipeError(f"no images found in {' '.join(inputs)} (looked for {', '.join(IMG_EXTENSIONS)})")
    return files


def drawing_names(files: list[Path]) -> list[Path]:
    """`<path>.png` per input, its path relative to the folder all inputs share (so `a/000.png` and
    `b/000.png` stay apart); a file given twice (or `x.jpg` next to `x.png`) gets `_<n>`."""
    absolute = [Path(os.path.abspath(file)) for file in files]
    common = Path(os.path.commonpath([str(file.parent) for file in absolute]))
    seen: dict[Path, int] = {}
    names = []
    for file in absolute:
        stem = file.relative_to(common).with_suffix("")
        n = seen.get(stem, 0)
        seen[stem] = n + 1
        names.append(stem.with_name(f"{stem.name}.png" if n == 0 else f"{stem.name}_{n}.png"))
    return names


def draw(file: Path, record: dict[str, Any], out: Path) -> None:
    """The image with its boxes (detection) or its top label framing it (classification)."""
    import torch
    from torchvision.transforms.v2.functional import pil_to_tensor, to_pil_image
    from torchvision.utils import draw_bounding_boxes

    from ..data.images import read_rgb

    canvas = pil_to_tensor(read_rgb(file))
    if "boxes" in record:
        if record["boxes"]:
            labels = [f"{name} {score:.2f}" for name, score in zip(record["labels"], record["scores"])]
            canvas = draw_bounding_boxes(canvas, torch.tensor(record["boxes"]), labels=labels, colors="red", width=2)
    else:
        top = record["topk"][0]
        h, w = canvas.shape[1:]
        canvas = draw_bounding_boxes(
            canvas,
            torch.tensor([[0, 0, w - 1, h - 1]]),
            labels=[f"{top['label']} {top['score']:.2f}"],
            colors="red",
            width=1,
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    to_pil_image(canvas).save(out)


def predict_command(
    ckpt: str,
    inputs: list[str],
    out: str,
    draw_dir: str | None,
    batch_size: int | None,
    score_thresh: float | None,
    topk: int,
    ema: bool,
    progress: bool | None = None,
) -> int:
    from accelerate import PartialState
    from accelerate.utils import gather_object

    from ..data.images import UNREADABLE_ERRORS
    from ..distributed import launched_without_accelerator, process_group_kwargs
    from ..predict import Predictor
    from ..progress import progress_bar, progress_enabled

    if topk <= 0:
        raise RecipeError(f"--topk must be positive, got {topk}")
    if batch_size is not None and batch_size <= 0:
        raise RecipeError(f"--batch-size must be positive, got {batch_size}")
    check_output_file(out, "--out")
    state = PartialState(cpu=launched_without_accelerator(), **process_group_kwargs())
    files = expand_inputs(inputs)
    names = drawing_names(files)
    if draw_dir:
        writable_folder(draw_dir)
    predictor = Predictor.from_checkpoint(ckpt, ema=ema, device=state.device)
    batch_size = batch_size or predictor.recipe.data.batch_size
    records: list[tuple[int, dict[str, Any] | None]] = []
    with state.split_between_processes(list(range(len(files)))) as mine:
        bar = progress_bar(len(files), "predict", "img", state.is_main_process and progress_enabled(progress))
        for start in range(0, len(mine), batch_size):
            batch = []
            for index in mine[start : start + batch_size]:
                try:
                    batch.append((index, predictor.preprocess(files[index])))
                except UNREADABLE_ERRORS as exc:
                    bar.write(f"accel-trainer: skipping unreadable image {files[index]}: {exc}", file=sys.stderr)
                    records.append((index, None))
            if batch:
                indices, prepared = zip(*batch)
                inputs_, file_names, sizes = zip(*prepared)
                found = predictor.predict_tensors(inputs_, file_names, sizes, topk=topk, score_thresh=score_thresh)
                for index, record in zip(indices, found):
                    records.append((index, record))
                    if draw_dir:
                        draw(files[index], record, Path(draw_dir) / names[index])
            bar.update(min(batch_size, len(mine) - start) * state.num_processes)
        bar.close()
    everything = sorted(gather_object(records), key=lambda item: item[0]) if state.num_processes > 1 else records
    if state.is_main_process:
        out_path = Path(out)
        written = [record for _, record in everything if record is not None]
        with atomic_write(out_path) as tmp, open(tmp, "w", encoding="utf-8") as f:
            for record in written:
                f.write(json.dumps(record) + "\n")
        skipped = len(everything) - len(written)
        processes = f" ({state.num_processes} processes)" if state.num_processes > 1 else ""
        print(
            f"wrote {len(written)} predictions to {out_path}{processes}"
            + (f"; skipped {skipped} unreadable images" if skipped else "")
            + (f"; drawings in {draw_dir}" if draw_dir else "")
        )
    state.wait_for_everyone()
    state.destroy_process_group()  # before the interpreter tears down the communication threads
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "checkpoint", help="checkpoint folder (its recipe.toml says how to build the model and preprocess)"
    )
    parser.add_argument(
        "inputs", nargs="+", metavar="INPUT", help="image files, folders (searched recursively) or globs"
    )
    parser.add_argument("--out", required=True, metavar="FILE.jsonl", help="output JSON lines file")
    parser.add_argument(
        "--draw", metavar="DIR", help="also write each image with its boxes / top label drawn (input folders kept)"
    )
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


def run(args: argparse.Namespace) -> int:
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
