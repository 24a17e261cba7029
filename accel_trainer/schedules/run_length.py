"""How long a run is, in epochs and optimizer steps: the one count the loop, the schedules, the
checkpoints, the ETA and the `schedule` preview all read.

Epochs can differ in length: a `[freeze]` stage with its own `batch_size` has more (or fewer)
optimizer steps per epoch than the epochs after it, so the total is a sum over the stages.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import RecipeError
from ..recipe.root import Recipe
from .apply import LrSchedule
from .policies import Progress


def _nonzero(steps: int, batch_size: int) -> int:
    if steps <= 0:
        raise RecipeError(
            f"the training set gives no batch at batch size {batch_size} per process; nothing to train on"
        )
    return steps


@dataclass(frozen=True)
class RunLength:
    """`epoch_iters[e]`: optimizer steps of epoch e (for an iteration runner, of every epoch it
    touches); `max_iters`: the runner's budget in optimizer steps."""

    epoch_iters: tuple[int, ...]
    max_iters: int
    batch_sizes: tuple[int, ...]  # per-process batch size of each epoch

    @classmethod
    def of_recipe(cls, recipe: Recipe, steps_at: Callable[[int], int]) -> RunLength:
        """`steps_at(batch_size)`: optimizer steps per epoch at that per-process batch size."""
        full = recipe.data.batch_size
        if not recipe.by_epoch:
            per_epoch = _nonzero(steps_at(full), full)
            epochs = math.ceil(recipe.runner.max_iters / per_epoch)
            return cls((per_epoch,) * epochs, recipe.runner.max_iters, (full,) * epochs)
        epochs = recipe.runner.max_epochs
        frozen = min(recipe.freeze.epochs, epochs)
        sizes = (recipe.freeze.batch_size or full,) * frozen + (full,) * (epochs - frozen)
        counts = {size: _nonzero(steps_at(size), size) for size in set(sizes)}
        iters = tuple(counts[size] for size in sizes)
        return cls(iters, sum(iters), sizes)

    @property
    def max_epochs(self) -> int:
        return len(self.epoch_iters)

    def iters_per_epoch(self, epoch: int) -> int:
        return self.epoch_iters[min(epoch, self.max_epochs - 1)]

    @functools.cached_property
    def _epoch_ends(self) -> list[int]:
        return list(itertools.accumulate(self.epoch_iters))

    def epoch_of(self, it: int) -> int:
        """The epoch that global iteration `it` belongs to."""
        return min(bisect.bisect_right(self._epoch_ends, it), self.max_epochs - 1)

    def progress(self, epoch: int, it: int) -> Progress:
        """The counters a schedule value depends on, at iteration `it` of `epoch`."""
        return Progress(epoch, it, self.iters_per_epoch(epoch), self.max_epochs, self.max_iters)

    def warmup_overrun(self, lr: LrSchedule) -> str | None:
        """A warning when the lr warmup lasts longer than the whole run (it never reaches the lr)."""
        warmup = lr.warmup
        if warmup is None:
            return None
        iters = warmup.iters * self.iters_per_epoch(0) if warmup.by_epoch else warmup.iters
        if iters <= self.max_iters:
            return None
        unit = f"{warmup.iters} epochs = {iters} iterations" if warmup.by_epoch else f"{iters} iterations"
        return (
            f"lr_config: the warmup ({unit}) is longer than the whole run ({self.max_iters} iterations); "
            "the lr never reaches its regular value"
        )
