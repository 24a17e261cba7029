"""Exact resume: a run SIGKILLed after a checkpoint (also while a background save is in flight), or
preempted by SIGTERM, and resumed ends with the uninterrupted run's weights, in one process or DDP;
so does a DDP group restarted by `accelerate launch --max_restarts` after one of its processes died.

Runs go through the real CLI in subprocesses, so the kill is a real SIGKILL of the whole process
(and of the data-loader workers with it); a custom hook pulls the trigger after a given iteration.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from accel_trainer.checkpoint.format import verify_checkpoint

from .helpers import REPO
from .helpers.launch import launch as ddp_launch
from .helpers.launch import run_group
from .helpers.recipes import write_recipe
from .helpers.resume import KILL_HOOK, assert_identical, final_weights

# Process groups launched here (restarts included) must not share the machine with other launches.
pytestmark = pytest.mark.multiprocess

# Checkpoints every 3 iterations in an epoch runner of 2 x 8 iterations: iter_9 sits mid-epoch 2.
COMMON = [
    "checkpoint_config.interval=3",
    "checkpoint_config.by_epoch=false",
    "data.augment.hflip=0.5",
    "data.augment.scale=[0.5, 1.0]",
]


def run(
    tmp_path: Path,
    name: str,
    sets: list[str],
    *extra: str,
    ddp: bool = False,
    port: int = 29531,
    launch: tuple[str, ...] = (),
) -> subprocess.CompletedProcess:
    """The CLI on `name`.toml in one process, or in two through `accelerate launch` (`launch`: its
    extra options); hook modules written to `tmp_path` are importable."""
    recipe = write_recipe(tmp_path, name=f"{name}.toml", work_dir=str(tmp_path / name))
    args = [*(arg for s in COMMON + sets for arg in ("--set", s)), *extra]
    if ddp:
        return ddp_launch(recipe, *args, port=port, hooks_dir=tmp_path, launcher_args=launch)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=f"{tmp_path}{os.pathsep}{REPO}")
    return run_group([sys.executable, "-m", "accel_trainer", str(recipe), *args], env)


def kill_hook(
    tmp_path: Path, kill_at: int, signal: str = "SIGKILL", rank: int = -1, workers: bool = False, settled: bool = False
) -> str:
    (tmp_path / "kill_hook.py").write_text(KILL_HOOK)
    args = (
        f'iter = {kill_at}, signal = "{signal}", rank = {rank}, workers = {str(workers).lower()}, '
        f"settled = {str(settled).lower()}"
    )
    return f'custom_hooks=[{{type = "kill_hook:KillAt", {args}}}]'


def kill_and_resume(
    tmp_path: Path, name: str, kill_at: int, sets: list[str], ddp: bool = False, settled: bool = False
) -> Path:
    killed = run(tmp_path, name, [*sets, kill_hook(tmp_path, kill_at, settled=settled)], ddp=ddp)
    assert killed.returncode != 0, "the kill hook did not fire"
    resumed = run(tmp_path, name, sets, "--resume", ddp=ddp)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    return tmp_path / name


def newest_complete_checkpoint(root: Path) -> tuple[Path, int]:
    """The `iter_N` folder with the highest N among those that verify (a folder under its final
    name is complete: writes go to a temporary name first), and N."""
    done = []
    for path in root.glob("*iter_*"):
        match = re.fullmatch(r"(?:epoch_\d+_)?iter_(\d+)", path.name)
        if match and path.is_dir():
            verify_checkpoint(path)
            done.append((int(match[1]), path))
    at, path = max(done)
    return path, at


def log_text(work: Path) -> str:
    return "\n".join(p.read_text() for p in sorted(work.glob("*.log")))


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, torch.Tensor]:
    tmp = tmp_path_factory.mktemp("reference")
    proc = run(tmp, "straight", ["data.num_workers=0"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return final_weights(tmp / "straight")


@pytest.mark.parametrize("workers", [0, 2])
def test_sigkill_mid_epoch_then_resume_is_bit_identical(tmp_path, reference, workers):
    # Killed after iteration 11; checkpoints were due after 3, 6 and 9. Whether iter_9's background
    # write had finished when the kill landed depends on the machine's load: the resume must start
    # from the newest complete one (iter_6 at the least: one write in flight at a time) and still
    # end bit-identical to the uninterrupted run.
    sets = [f"data.num_workers={workers}"]
    killed = run(tmp_path, "killed", [*sets, kill_hook(tmp_path, 11)])
    assert killed.returncode != 0, "the kill hook did not fire"
    work = tmp_path / "killed"
    newest, at = newest_complete_checkpoint(work / "checkpoints")
    assert at in (6, 9)
    resumed = run(tmp_path, "killed", sets, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert re.search(rf"resumed from {re.escape(str(newest))} at epoch \d+, iter {at}\n", log_text(work))
    assert_identical(final_weights(work), reference)


def test_resume_from_an_epoch_end_checkpoint_starts_the_next_epoch(tmp_path, reference):
    sets = ["checkpoint_config.by_epoch=true", "checkpoint_config.interval=1"]
    # Killed once epoch_1 is on disk: what is tested is where the resume starts, not a kill mid-write.
    work = kill_and_resume(tmp_path, "epoch_end", kill_at=10, sets=sets, settled=True)
    assert_identical(final_weights(work, "epoch_2"), reference)
    records = [json.loads(line) for p in sorted(work.glob("*.log.json")) for line in p.read_text().splitlines()]
    train_iters = [(r["epoch"], r["iter"]) for r in records if r["mode"] == "train"]
    # Epoch 1 is not trained twice and epoch 2 is not skipped.
    assert train_iters.count((1, 4)) == 1 and train_iters.count((2, 4)) == 1 and (2, 8) in train_iters


@pytest.fixture(scope="module")
def ddp_reference(tmp_path_factory) -> dict[str, torch.Tensor]:
    tmp = tmp_path_factory.mktemp("ddp_reference")
    straight = run(tmp, "straight", [], ddp=True)
    assert straight.returncode == 0, straight.stderr[-3000:]
    return final_weights(tmp / "straight", "iter_8")


def test_two_process_ddp_sigkill_then_resume_is_bit_identical(tmp_path, ddp_reference):
    # 2 processes x batch 16: 4 iterations per epoch, so iter_3 is mid-epoch 1 and iter_6 mid-epoch 2.
    work = kill_and_resume(tmp_path, "killed", kill_at=7, sets=[], ddp=True)
    assert_identical(final_weights(work, "iter_8"), ddp_reference)


@pytest.mark.parametrize("workers", [0, 2])
def test_sigterm_saves_the_current_step_and_resume_auto_is_bit_identical(tmp_path, reference, workers):
    sets = [f"data.num_workers={workers}"]
    # The signal arrives after iteration 11 (mid-epoch 2), i.e. while step 12 is under way: that
    # step finishes, is checkpointed, and nothing is lost. With workers it reaches them too (as
    # SLURM's does): they keep loading, the main process decides when everything stops.
    hook = kill_hook(tmp_path, 11, "SIGTERM", workers=workers > 0)
    stopped = run(tmp_path, "preempted", [*sets, hook], "--resume", "auto")
    assert stopped.returncode == 128 + 15, stopped.stderr[-3000:]
    work = tmp_path / "preempted"
    assert (work / "checkpoints" / "latest").read_text().strip() == "epoch_2_iter_12"
    assert "preempted at epoch 2, iter 12 by SIGTERM" in log_text(work)
    resumed = run(tmp_path, "preempted", sets, "--resume", "auto")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "epoch_2_iter_12 at epoch 2, iter 12" in log_text(work)
    assert_identical(final_weights(work), reference)


def test_ddp_sigterm_on_one_process_stops_both_at_the_same_step(tmp_path, ddp_reference):
    # Only process 1 is signalled after iteration 5; the step vote makes both stop after iteration 6.
    # The launcher ends with the signal's code too: no restart of the group, no ChildFailedError.
    launch = ("--max_restarts", "2", "--monitor_interval", "0.2")
    hook = kill_hook(tmp_path, 5, "SIGTERM", rank=1)
    stopped = run(tmp_path, "preempted", [hook], ddp=True, port=29532, launch=launch)
    assert stopped.returncode == 128 + 15, stopped.stderr[-3000:]
    assert "Traceback" not in stopped.stderr and "restart" not in stopped.stderr.lower()
    work = tmp_path / "preempted"
    assert (work / "checkpoints" / "latest").read_text().strip() == "epoch_2_iter_6"
    assert "preempted at epoch 2, iter 6 by SIGTERM" in log_text(work)
    resumed = run(tmp_path, "preempted", [], "--resume", "auto", ddp=True, port=29532)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_identical(final_weights(work, "iter_8"), ddp_reference)


def test_elastic_restart_after_a_killed_process_is_bit_identical(tmp_path, ddp_reference):
    # Process 1 is SIGKILLed after iteration 7 (the first attempt only); --max_restarts restarts the
    # group, which resumes from iter_6, the newest complete checkpoint. The restarted processes meet in
    # the agent's store, which still holds the first attempt's addresses (see process_group_kwargs).
    proc = run(
        tmp_path,
        "elastic",
        [kill_hook(tmp_path, 7, rank=1)],
        "--resume",
        "auto",
        ddp=True,
        port=29534,
        launch=("--max_restarts", "1", "--monitor_interval", "0.2"),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    work = tmp_path / "elastic"
    # iter_6 is written in the background; if the kill came before it was in place, iter_3 is the newest.
    assert re.search(r"resumed from \S+iter_(6 at epoch 2, iter 6|3 at epoch 1, iter 3)", log_text(work))
    assert_identical(final_weights(work, "iter_8"), ddp_reference)


SLOW_SAVE_HOOK = """
import os, signal, threading, time
from accel_trainer import Hook
from accel_trainer.checkpoint import format as checkpoint

in_flight = threading.Event()
_install = checkpoint._install

def _held_install(tmp, final):
    # The folder's files are written and hashed; hold it before the rename that makes it a checkpoint.
    if final.name == "iter_6":
        in_flight.set()
        time.sleep(300)
    return _install(tmp, final)

checkpoint._install = _held_install

class KillWhileSaving(Hook):
    def after_train_iter(self, trainer):
        if trainer.iter == 7 and in_flight.wait(120):
            os.kill(os.getpid(), signal.SIGKILL)
"""


def test_kill_while_a_background_save_is_in_flight_resumes_from_the_previous_checkpoint(tmp_path, reference):
    (tmp_path / "slow_save.py").write_text(SLOW_SAVE_HOOK)
    killed = run(tmp_path, "in_flight", ['custom_hooks=[{type = "slow_save:KillWhileSaving"}]'])
    assert killed.returncode == -9, killed.stderr[-3000:]
    root = tmp_path / "in_flight" / "checkpoints"
    assert (root / "latest").read_text().strip() == "iter_3", "latest moved before the checkpoint was complete"
    assert not (root / "iter_6").exists() and [p.name for p in root.glob(".tmp-iter_6-*")]
    resumed = run(tmp_path, "in_flight", [], "--resume", "auto")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "iter_3 at epoch 1, iter 3" in log_text(tmp_path / "in_flight")
    assert not list(root.glob(".tmp-*")), "the dead run's half-written folder was left behind"
    assert_identical(final_weights(tmp_path / "in_flight"), reference)
