"""Killing a run at a chosen iteration and comparing its final weights with an uninterrupted run's,
for the tests that resume runs bit-exactly."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

# A hook module, written next to the recipe: `custom_hooks = [{type = "kill_hook:KillAt", iter = N}]`.
KILL_HOOK = """
import os, signal, subprocess
import psutil
from accel_trainer import Hook

class KillAt(Hook):
    # Sends `signal` to this process after iteration `iter`, on process `rank` (-1: all), in the first
    # attempt of an elastic launch only; with `workers`, to its data-loader workers first (from another
    # process), as a scheduler that signals every process of the job does; with `settled`, once the
    # checkpoint being written in the background is complete.
    def __init__(self, iter, signal="SIGKILL", rank=-1, workers=False, settled=False):
        self.at, self.signal, self.rank, self.workers = iter, getattr(signal_module, signal), rank, workers
        self.settled = settled
    def after_train_iter(self, trainer):
        first_attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"
        if trainer.iter == self.at and first_attempt and self.rank in (-1, trainer.accelerator.process_index):
            if self.workers:  # from another process, as a scheduler's signal comes
                pids = [str(child.pid) for child in psutil.Process().children()]
                assert pids, "no data-loader workers to signal"
                subprocess.run(["kill", "-s", self.signal.name, *pids], check=True)
            if self.settled:
                trainer.checkpoints.wait()
            os.kill(os.getpid(), self.signal)

signal_module = signal
"""


def final_weights(work: Path, last: str = "iter_16") -> dict[str, torch.Tensor]:
    """The model weights of checkpoint `last`, which must be the run's latest."""
    root = work / "checkpoints"
    assert (root / "latest").read_text().strip() == last
    return load_file(root / last / "model.safetensors")


def assert_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    """Bit-identical state dicts; the message names a few tensors that differ."""
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"
