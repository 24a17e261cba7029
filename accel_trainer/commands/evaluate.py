"""`accel-trainer RECIPE --eval-only`: evaluate a checkpoint and write `work_dir/eval/`."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from ..checkpoint.format import load_extra_tensors
from ..files import write_text
from ..hooks.ema import EMA_STEM, evaluate_ema_weights

logger = logging.getLogger(__name__)


def evaluate_command(trainer, weights: str | None) -> int:
    """Evaluate `weights` (a checkpoint folder or file), else the newest checkpoint, else `load_from`.

    A checkpoint's EMA weights are evaluated too: metrics under the usual keys, the raw weights' as `raw_*`.
    """
    if weights is None and not trainer.recipe.load_from:
        found = trainer.checkpoints.find_resumable()
        weights = str(found) if found else None
    if weights:
        trainer.load_weights(weights)
    elif not trainer.recipe.load_from:
        logger.warning(
            "--eval-only: no checkpoint found under %s; evaluating freshly initialised weights",
            trainer.checkpoints.root,
        )
    source = weights or trainer.recipe.load_from
    ema = load_extra_tensors(source, EMA_STEM) if source else None
    evaluate_ema_weights(trainer, ema, source)
    results = trainer.evaluate()
    if trainer.accelerator.is_main_process:
        out = Path(trainer.work_dir) / "eval"
        out.mkdir(parents=True, exist_ok=True)
        write_text(out / "metrics.json", json.dumps(results, indent=2) + "\n")
        write_predictions = getattr(trainer.task, "write_predictions", None)
        if write_predictions is not None:
            write_predictions(out / "predictions.bbox.json")
        logger.info("eval results written to %s", out)
    return 0
