"""Real two-process DDP on CPU (gloo) through `accelerate launch`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO


def run_group(cmd: list[str], env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    """Runs `cmd` in a process group of its own: on a timeout the whole group is killed, so a hung
    rank is not left behind when only its launcher would have been."""
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def launch(
    recipe: Path,
    *args: str,
    port: int = 29517,
    hooks_dir: Path | None = None,
    launcher_args: tuple[str, ...] = (),
) -> subprocess.CompletedProcess:
    """Two CPU processes; `port` differs per test file, since files may run side by side;
    `hooks_dir` holds hook modules the recipe imports; `launcher_args` go to `accelerate launch`."""
    env = dict(os.environ, ACCELERATE_USE_CPU="1", OMP_NUM_THREADS="1")
    if hooks_dir is not None:
        env["PYTHONPATH"] = f"{hooks_dir}{os.pathsep}{REPO}"
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(port),
        *launcher_args,
        "-m",
        "accel_trainer",
        str(recipe),
        *args,
    ]
    return run_group(cmd, env)


@pytest.mark.multiprocess
def test_two_process_ddp_counts_every_val_sample_once(tiny_recipe):
    proc = launch(tiny_recipe, "--set", "runner.max_epochs=1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    work = tiny_recipe.parent / "work"
    log_text = next(work.glob("*.log")).read_text()
    assert "MULTI_CPU, 2 processes" in log_text
    records = [json.loads(line) for line in next(work.glob("*.log.json")).read_text().splitlines()]
    val = [r for r in records if r["mode"] == "val"]
    assert len(val) == 1 and val[0]["num_samples"] == 21
    train = [r for r in records if r["mode"] == "train"]
    assert train[-1]["iter"] == 4
