"""`accel-trainer plot WORK_DIR [WORK_DIR ...]`: loss, lr and val metric curves, several runs compared."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..plotting import newest_log, plot_curves, read_log, run_labels


def plot_command(work_dirs: Sequence[str], out: str, keys: str | None, smooth: float) -> int:
    paths = [Path(p) for p in work_dirs]
    logs = [newest_log(p) for p in paths]
    runs = [read_log(log, label) for log, label in zip(logs, run_labels(paths))]
    wanted = [k.strip() for k in keys.split(",") if k.strip()] if keys else None
    plot_curves(runs, wanted, smooth).savefig(out, dpi=100)
    print(f"{out}: {', '.join(str(log) for log in logs)}")
    return 0
