"""`accel-trainer plot WORK_DIR [WORK_DIR ...]`: loss, lr and val metric curves, several runs compared
(each work dir's latest run, across the logs of the runs it resumed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..plotting import plot_curves, read_run, run_labels, run_logs


def plot_command(work_dirs: Sequence[str], out: str, keys: str | None, smooth: float) -> int:
    paths = [Path(p) for p in work_dirs]
    logs = [run_logs(p) for p in paths]
    runs = [read_run(run, label) for run, label in zip(logs, run_labels(paths))]
    wanted = [k.strip() for k in keys.split(",") if k.strip()] if keys else None
    plot_curves(runs, wanted, smooth).savefig(out, dpi=100)
    print(f"{out}: {', '.join(str(log) for run in logs for log in run)}")
    return 0
