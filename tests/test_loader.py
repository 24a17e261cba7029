from __future__ import annotations

import signal
import warnings

import torch
from torch.utils.data import TensorDataset

from accel_trainer.data.loader import build_loader
from accel_trainer.schema import Recipe


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


class SignalDispositions(torch.utils.data.Dataset):
    """Yields, from inside the loader worker, whether it ignores each stop signal."""

    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int) -> torch.Tensor:
        stops = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)
        return torch.tensor([signal.getsignal(s) == signal.SIG_IGN for s in stops])


def test_loader_workers_leave_stop_signals_to_the_main_process():
    # This process keeps the default dispositions; its forked workers must not.
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    (ignored,) = build_loader(SignalDispositions(), _recipe(num_workers=1), batch_size=1, train=False)
    assert ignored.tolist() == [[True, True, True]]
