"""Checking a recipe vs importing torch: `--print-recipe` and `schedule --iters-per-epoch N`.

Both commands run every check a recipe gets before training (keys, values, the optimizer's own
constructor over no parameters, the schedule) and need torch for it, so `python -c "import torch"`
is their floor. Each repeat runs the three processes one after another (import torch, then each
command on the shipped recipe), alternating, so slow drift of a shared machine lands on all of
them; the table shows the best and the median of each and the ratio of the bests, and the median
of the ratios paired within a repeat.

    python benchmarks/startup.py [--repeats 5] [--recipe recipes/det.toml] [--iters-per-epoch 100]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--recipe", default="recipes/det.toml")
    parser.add_argument("--iters-per-epoch", type=int, default=100)
    args = parser.parse_args()
    cli = [sys.executable, "-m", "accel_trainer"]
    commands = {
        "python -c 'import torch'": [sys.executable, "-c", "import torch"],
        "RECIPE --print-recipe": [*cli, args.recipe, "--print-recipe"],
        f"schedule RECIPE --iters-per-epoch {args.iters_per_epoch}": [
            *cli,
            "schedule",
            args.recipe,
            "--iters-per-epoch",
            str(args.iters_per_epoch),
        ],
    }
    times: dict[str, list[float]] = {name: [] for name in commands}
    timed(commands["python -c 'import torch'"])  # warm the page cache and the bytecode caches
    for _ in range(args.repeats):
        for name, cmd in commands.items():
            times[name].append(timed(cmd))
    base_name, *names = commands
    base = times[base_name]
    print(f"recipe {args.recipe}, {args.repeats} repeats, load average {os.getloadavg()[0]:.2f} (1 min) at the end")
    print(f"{'':44s}{'best (s)':>10s}{'median (s)':>12s}{'best / torch':>14s}{'paired median':>15s}")
    print(f"{base_name:44s}{min(base):10.3f}{statistics.median(base):12.3f}{1.0:14.3f}{1.0:15.3f}")
    for name in names:
        ours = times[name]
        paired = statistics.median(a / b for a, b in zip(ours, base))
        print(f"{name:44s}{min(ours):10.3f}{statistics.median(ours):12.3f}{min(ours) / min(base):14.3f}{paired:15.3f}")


if __name__ == "__main__":
    main()
