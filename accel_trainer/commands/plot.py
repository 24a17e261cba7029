"""`accel-trainer plot WORK_DIR [WORK_DIR ...]`: loss, lr and val metric curves, several runs compared
(each work dir's latest run, across the logs of the runs it resumed)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from ..plotting import plot_curves, read_run, run_labels, run_logs

DESCRIPTION = (
    "Plot train loss, lr and val metrics of each work dir's latest run, across the *.log.json files of the "
    "runs it resumed (needs the 'plot' extra)."
)


def plot_command(work_dirs: Sequence[str], out: str, keys: str | None, smooth: float) -> int:
    paths = [Path(p) for p in work_dirs]
    logs = [run_logs(p) for p in paths]
    runs = [read_run(run, label) for run, label in zip(logs, run_labels(paths))]
    wanted = [k.strip() for k in keys.split(",") if k.strip()] if keys else None
    plot_curves(runs, wanted, smooth).savefig(out, dpi=100)
    print(f"{out}: {', '.join(str(log) for run in logs for log in run)}")
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("work_dirs", nargs="+", metavar="WORK_DIR", help="work dirs (or .log.json files) to compare")
    parser.add_argument("--out", default="curves.png", help="output image (default: curves.png)")
    parser.add_argument(
        "--keys", help="comma-separated keys, one subplot each (default: loss, lr and every val metric)"
    )
    parser.add_argument(
        "--smooth", type=float, default=0.6, help="EMA weight for train curves, 0 to turn off (default: 0.6)"
    )


def run(args: argparse.Namespace) -> int:
    return plot_command(args.work_dirs, args.out, args.keys, args.smooth)
