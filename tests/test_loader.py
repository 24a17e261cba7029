from __future__ import annotations

import os
import signal
import subprocess
import time
import warnings

import psutil
import torch
from torch.utils.data import TensorDataset

from accel_trainer.data.loader import build_loader
from accel_trainer.recipe.root import Recipe


def _recipe(**data) -> Recipe:
    return Recipe.from_dict({"data": {"type": "shapes", "num_workers": 0, **data}, "runner": {"max_epochs": 1}})


def test_pin_memory_only_with_an_accelerator(monkeypatch):
    ds = TensorDataset(torch.arange(6.0))
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loader = build_loader(ds, _recipe(pin_memory=True), batch_size=2, train=False)
        assert not loader.pin_memory
        assert len(list(loader)) == 3
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: True)
    assert build_loader(ds, _recipe(pin_memory=True), batch_size=2, train=False).pin_memory
    assert not build_loader(ds, _recipe(pin_memory=False), batch_size=2, train=False).pin_memory


def test_every_index_once_per_epoch_in_a_seeded_order():
    ds = TensorDataset(torch.arange(10.0))
    recipe = _recipe()
    first = torch.cat([b[0] for b in build_loader(ds, recipe, batch_size=3, train=True)])
    again = torch.cat([b[0] for b in build_loader(ds, recipe, batch_size=3, train=True)])
    assert sorted(first.tolist()) == list(range(10))
    assert torch.equal(first, again)
    ordered = torch.cat([b[0] for b in build_loader(ds, recipe, batch_size=3, train=False)])
    assert ordered.tolist() == list(range(10))


class WorkerPid(torch.utils.data.Dataset):
    """Yields the pid of the loader worker that loads it, and whether it ignores SIGINT and SIGUSR1."""

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> torch.Tensor:
        ignored = [signal.getsignal(s) == signal.SIG_IGN for s in (signal.SIGINT, signal.SIGUSR1)]
        return torch.tensor([os.getpid(), *ignored])


def _exited(pid: int) -> bool:
    """Without reaping it: the loader's own bookkeeping does that."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
            return True
        time.sleep(0.05)
    return False


def test_a_worker_ignores_stop_signals_from_outside_and_exits_when_its_parent_ends_it():
    loader = build_loader(WorkerPid(), _recipe(num_workers=1), batch_size=1, train=False)
    batches = iter(loader)
    pid, *ignored = next(batches)[0].tolist()
    assert pid != os.getpid() and ignored == [1, 1]
    # A scheduler's SIGTERM (sent here by another process, as slurmstepd would) leaves it loading.
    subprocess.run(["kill", "-TERM", str(pid)], check=True)
    time.sleep(0.5)
    assert psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    assert len(list(batches)) == 3
    # The parent's SIGTERM (how it ends a worker that is slow to stop) ends it.
    batches = iter(build_loader(WorkerPid(), _recipe(num_workers=1), batch_size=1, train=False))
    pid = int(next(batches)[0][0])
    os.kill(pid, signal.SIGTERM)
    assert _exited(pid)
