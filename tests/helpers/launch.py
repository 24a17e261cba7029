"""Runs of the real CLI in subprocesses, each in a process group of its own, and two-process DDP
runs on CPU through `accelerate launch`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from . import REPO


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
    processes: int = 2,
) -> subprocess.CompletedProcess:
    """Two CPU processes (`processes` = 1: accelerate's launcher of one process); `port` differs per
    test file, since files may run side by side; `hooks_dir` holds hook modules the recipe imports;
    `launcher_args` go to `accelerate launch`."""
    env = dict(os.environ, ACCELERATE_USE_CPU="1", OMP_NUM_THREADS="1")
    if hooks_dir is not None:
        env["PYTHONPATH"] = f"{hooks_dir}{os.pathsep}{REPO}"
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        *(["--multi_gpu"] if processes > 1 else []),
        "--num_processes",
        str(processes),
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
