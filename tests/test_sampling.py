from __future__ import annotations

import random

import numpy as np
import torch

from accel_trainer.data.sampling import SeededDataset


class _Draws:
    """Each item is what the three global RNGs give under that item's seed."""

    def __len__(self) -> int:
        return 8

    def __getitem__(self, index: int) -> tuple[float, float, float]:
        return random.random(), float(np.random.rand()), float(torch.rand(()))


def test_batch_fetch_matches_single_items_and_restores_global_rngs():
    data = SeededDataset(_Draws(), seed=3)
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    expected_next = random.random(), float(np.random.rand()), float(torch.rand(()))
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    items = [(2, i) for i in range(4)]
    batch = data.__getitems__(items)
    assert batch == [data[item] for item in items]
    assert len(set(batch)) == 4 and batch != data.__getitems__([(3, i) for i in range(4)])
    assert (random.random(), float(np.random.rand()), float(torch.rand(()))) == expected_next


def test_loader_fetches_whole_batches():
    calls = []

    class Counting(SeededDataset):
        def __getitems__(self, items):
            calls.append(len(items))
            return super().__getitems__(items)

    data = Counting(_Draws(), seed=3)
    loader = torch.utils.data.DataLoader(data, batch_size=4, sampler=[(0, i) for i in range(8)])
    first = next(iter(loader))
    assert calls == [4]
    assert [float(v) for v in first[0]] == [data[(0, i)][0] for i in range(4)]
