"""Every picture the product draws, with matplotlib (an optional extra) drawn without pyplot.

Training curves come from the `.log.json` records the text logger writes, one subplot per key:
train records give the raw log windows (and an exponential moving average of them, debiased as
TensorBoard's smoothing slider is); val records give one point per evaluation, all against the
global iteration so runs of different lengths line up. A resumed run's curves go on across
its log files (`run_logs`). COCO's -1 ("no boxes of this size") is not a value and is not drawn.
The schedule preview draws lr and momentum per iteration with the epoch boundaries.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import RecipeError
from .files import atomic_write
from .recipe.checks import is_number

logger = logging.getLogger(__name__)

INSTALL_HINT = 'pip install "accel_trainer[plot]"'


def have_matplotlib() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def figure_class(purpose: str) -> Any:
    """matplotlib's `Figure` (drawn without pyplot, so no GUI backend is touched)."""
    try:
        from matplotlib.figure import Figure
    except ImportError as e:
        raise RecipeError(f"{purpose} needs matplotlib: {INSTALL_HINT}") from e
    return Figure


def is_point(key: str, value: Any) -> bool:
    """A value to draw: a number, except COCO's -1 for "no ground truth of this size" (bbox_mAP_s ...)."""
    return is_number(value) and not (value == -1 and "mAP" in key)


# Record fields that are bookkeeping, not curves.
_NOT_CURVES = {"mode", "epoch", "iter", "global_iter", "memory", "time", "data_time", "num_samples"}


@dataclass
class RunLog:
    """One run's records, split by mode."""

    label: str
    train: list[dict[str, Any]] = field(default_factory=list)
    val: list[dict[str, Any]] = field(default_factory=list)
    resumed_at: int = 0  # the iteration a resumed run's log starts after


def run_logs(path: str | Path, newest: Path | None = None) -> list[Path]:
    """The `.log.json` files of a work dir's latest run, oldest first (a `.log.json` path: itself).

    The run ends with the newest log that has train records (`newest`, if given) and takes in,
    going back, the log each resumed run continued: a resumed run's log opens with a
    `{"mode": "run", "resumed_at_iter": N}` record. Logs without train records (`--eval-only`,
    a run stopped before its first log line) are passed over.
    """
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise RecipeError(f"{path}: no such work dir")
    logs = sorted(p for p in path.glob("*.log.json") if newest is None or p.name <= newest.name)
    if not logs:
        raise RecipeError(f"{path}: no *.log.json training log in this work dir")
    chain: list[Path] = []
    for log in reversed(logs):
        trains, resumed = _log_start(log)
        if not trains:
            continue
        chain.insert(0, log)
        if not resumed:
            break
    return chain or [logs[-1]]


def _log_start(log: Path) -> tuple[bool, bool]:
    """(has train records, is a resumed run's log), from the first records."""
    resumed = False
    with log.open(encoding="utf-8") as f:
        for line in f:
            record = _record(line)
            if record is None:
                return False, False
            if record.get("mode") == "run":
                resumed = bool(record.get("resumed_at_iter"))
            elif record.get("mode") == "train":
                return True, resumed
    return False, resumed


def _record(line: str) -> dict[str, Any] | None:
    """One log line's record, or None when the line is not a JSON object (damaged, or nested too
    deeply for the parser)."""
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):
        return None
    return record if isinstance(record, dict) else None


def read_run(logs: list[Path], label: str) -> RunLog:
    """One curve through a run's logs (`run_logs`): each log's records before the iteration the
    next one resumed at (the iterations trained again are drawn once, from the later log)."""
    run = RunLog(label)
    parts = [read_log(log, label) for log in logs]
    for part, later in zip(parts, [*parts[1:], None]):
        end = later.resumed_at if later is not None else None
        run.train += [r for r in part.train if end is None or r["global_iter"] <= end]
        run.val += [r for r in part.val if end is None or r.get("iter", 0) <= end]
    return run


def read_log(path: Path, label: str) -> RunLog:
    run = RunLog(label)
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        record = _record(line)
        if record is None:
            raise RecipeError(f"{path}:{number}: not a JSON record (damaged, or nested too deeply to read)")
        if record.get("mode") == "train":
            if "global_iter" not in record:
                raise RecipeError(f"{path}:{number}: train record without global_iter (not written by accel_trainer)")
            run.train.append(record)
        elif record.get("mode") == "val":
            run.val.append(record)
        elif record.get("mode") == "run":
            run.resumed_at = int(record.get("resumed_at_iter") or 0)
    return run


def available_keys(runs: list[RunLog]) -> list[str]:
    """loss and lr first, then every other numeric field (val metrics, grad_norm, ...) in log order."""
    found: list[str] = []
    for run in runs:
        for record in run.train + run.val:
            found += [k for k, v in record.items() if k not in _NOT_CURVES and k not in found and is_point(k, v)]
    return [k for k in ("loss", "lr") if k in found] + [k for k in found if k not in ("loss", "lr")]


def ema(values: list[float], weight: float) -> list[float]:
    """Exponential moving average, debiased so the first points are not pulled towards zero."""
    out, acc = [], 0.0
    for n, value in enumerate(values, 1):
        acc = weight * acc + (1 - weight) * value
        out.append(acc / (1 - weight**n))
    return out


def _series(records: list[dict], key: str, x_key: str) -> tuple[list[int], list[float]]:
    points = [(r[x_key], r[key]) for r in records if is_point(key, r.get(key))]
    return [x for x, _ in points], [y for _, y in points]


def plot_curves(runs: list[RunLog], keys: list[str] | None = None, smooth: float = 0.6, title: str = "") -> Any:
    """A matplotlib Figure with one subplot per key and one colour per run."""
    Figure = figure_class("plotting training curves")
    available = available_keys(runs)
    keys = keys or available
    unknown = [k for k in keys if k not in available]
    if unknown:
        raise RecipeError(f"--keys: {', '.join(unknown)} not in the logs; available: {', '.join(available) or 'none'}")
    if not 0 <= smooth < 1:
        raise RecipeError(f"--smooth = {smooth}: expected a weight in [0, 1)")
    ncols = 2 if len(keys) == 4 else min(len(keys), 3)
    nrows = -(-len(keys) // ncols)
    fig = Figure(figsize=(5 * ncols, 3.2 * nrows + 0.4), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[len(keys) :]:
        fig.delaxes(ax)
    colors = [f"C{i % 10}" for i in range(len(runs))]
    for ax, key in zip(axes, keys):
        for run, color in zip(runs, colors):
            xs, ys = _series(run.train, key, "global_iter")
            if xs and smooth and key != "lr":
                ax.plot(xs, ys, color=color, alpha=0.3, linewidth=0.8)
                ax.plot(xs, ema(ys, smooth), color=color, linewidth=1.5, label=f"{run.label} train")
            elif xs:
                ax.plot(xs, ys, color=color, linewidth=1.5, label=f"{run.label} train")
            if key != "lr":
                xs, ys = _series(run.val, key, "iter")
                if xs:
                    ax.plot(xs, ys, color=color, linestyle="--", marker="o", markersize=3, label=f"{run.label} val")
        ax.set_title(key)
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    if title:
        fig.suptitle(title)
    return fig


def run_labels(paths: list[Path]) -> list[str]:
    """Work dir names, or whole paths where two names collide."""
    names = [p.name if p.is_dir() else p.parent.name for p in paths]
    return [names[i] if names.count(names[i]) == 1 else str(p) for i, p in enumerate(paths)]


def write_run_curves(log_json: Path, out: Path) -> None:
    """`curves.png` at the end of a run: the whole run, across the logs of earlier runs it resumed;
    skipped (debug log) without matplotlib or without train records in this run's log. A picture
    that cannot be written (a full disk) is a warning: the run and its checkpoints are done."""
    if not have_matplotlib():
        logger.debug("no %s: matplotlib is not installed (%s)", out.name, INSTALL_HINT)
        return
    try:
        if not log_json.is_file() or not _log_start(log_json)[0]:
            return
        run = read_run(run_logs(log_json.parent, newest=log_json), log_json.parent.name)
        with atomic_write(out) as tmp:
            plot_curves([run], title=log_json.parent.name).savefig(tmp, dpi=100, format="png")
    except (OSError, RecipeError) as exc:
        logger.warning("curves not written: %s; the run and its checkpoints are complete", exc)
        return
    logger.info("curves: %s", out)


def plot_schedule_png(rows: Sequence[tuple[int, int, float, float | None]], path: str | Path, title: str = "") -> None:
    """`(iter, epoch, lr, momentum)` rows: lr (and momentum, when any) against iteration, with
    grey lines where the epoch changes."""
    Figure = figure_class("plotting the schedule")
    iters = [r[0] for r in rows]
    series = [("lr", [r[2] for r in rows])]
    if any(r[3] is not None for r in rows):
        series.append(("momentum", [math.nan if r[3] is None else r[3] for r in rows]))
    fig = Figure(figsize=(10, 3 * len(series) + 0.5), layout="constrained")
    axes = fig.subplots(len(series), 1, sharex=True, squeeze=False)[:, 0]
    boundaries = [row[0] for prev, row in zip(rows, rows[1:]) if row[1] != prev[1]]
    for ax, (label, ys) in zip(axes, series):
        ax.vlines(boundaries, 0, 1, transform=ax.get_xaxis_transform(), colors="0.85", linewidth=0.6, zorder=0)
        ax.plot(iters, ys, linewidth=1.2)
        ax.set_ylabel(label)
        ax.grid(axis="y", alpha=0.3)
    axes[-1].set_xlabel("iteration (grey lines: epoch boundaries)")
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=100)
