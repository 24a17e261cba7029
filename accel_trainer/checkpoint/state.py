"""The stateful parts a checkpoint holds: each has `state_dict()` and `load_state_dict(state)`.

A module, a torch optimizer or a grad scaler is one as it is; this module adds the loop's
counters (`TrainState`), the random generators (`RNGState`) and the optimizer as it is resumed
(`OptimizerState`: the recipe's hyperparameters win over the saved ones). The manager
(`manager.py`) is given the parts by name and decides which file each goes to.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch

from .format import capture_rng_state, restore_rng_state


@runtime_checkable
class Stateful(Protocol):
    """What a checkpoint part provides (torch modules, optimizers and grad scalers already do)."""

    def state_dict(self) -> Any: ...
    def load_state_dict(self, state: Any, /) -> Any: ...


@dataclass
class TrainState:
    """Where the loop is: epochs and iterations done, the position inside the epoch, the best val metric.

    The loop advances the counters (the trainer's `epoch`, `iter`, `inner_iter` are these);
    `trainer_state.json` holds them. A resume sets `resume_inner_iter`, the iterations of the
    current epoch already done, which the loop skips when it starts that epoch.
    """

    by_epoch: bool  # the runner is epoch-based; a checkpoint of the other runner type is refused
    epoch: int = 0
    iter: int = 0
    inner_iter: int = 0
    resume_inner_iter: int = 0
    mid_epoch: bool = False  # an epoch's batches are in progress
    best: dict[str, Any] = field(default_factory=dict)  # {"key", "value", "name"} of the best checkpoint

    def begin_epoch(self) -> int:
        """Start an epoch's batches; returns the iterations of it already done (after a mid-epoch resume)."""
        self.inner_iter, self.resume_inner_iter = self.resume_inner_iter, 0
        self.mid_epoch = True
        return self.inner_iter

    def end_epoch(self) -> None:
        self.epoch += 1
        self.mid_epoch = False

    @property
    def epoch_shown(self) -> int:
        """The 1-based epoch of the last iteration done, as the log's `Epoch [E]` lines and the checkpoint names count."""
        return self.epoch + 1 if self.mid_epoch or self.resume_inner_iter else self.epoch

    def state_dict(self) -> dict[str, Any]:
        # Between epochs the position is that of the next epoch's start (0 unless a resume set it).
        position = self.inner_iter if self.mid_epoch else self.resume_inner_iter
        return {
            "epoch": self.epoch,
            "iter": self.iter,
            "inner_iter": position,
            "by_epoch": self.by_epoch,
            "best": self.best,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from `state` (checked by the manager); the epoch in progress, if any, is abandoned."""
        self.epoch, self.iter, self.resume_inner_iter = state["epoch"], state["iter"], state["inner_iter"]
        self.best = dict(state.get("best") or {})
        self.mid_epoch = False


class StateCounter:
    """A `TrainState` counter seen as an attribute of the object that holds the state as `.state`:
    `trainer.epoch` is `trainer.state.epoch`, so hooks read the counters where checkpoints keep them."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, holder: Any, owner: type | None = None) -> int:
        return getattr(holder.state, self.name)

    def __set__(self, holder: Any, value: int) -> None:
        setattr(holder.state, self.name, value)


class RNGState:
    """Python `random`, numpy's global generator, torch CPU and every CUDA device in use."""

    def state_dict(self) -> dict[str, Any]:
        tensors, meta = capture_rng_state()
        return {"tensors": tensors, "meta": meta}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        restore_rng_state(state["tensors"], state["meta"])


class OptimizerState:
    """A torch optimizer whose resume keeps today's lr / momentum / betas from the recipe.

    The schedule re-derives its base values from them (`initial_lr`, `initial_momentum` are
    dropped), so a resumed run with a changed lr follows the new one.
    """

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer

    def state_dict(self) -> dict[str, Any]:
        return self.optimizer.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        groups = self.optimizer.param_groups
        fresh: list[dict[str, Any]] = [{k: g[k] for k in ("lr", "momentum", "betas") if k in g} for g in groups]
        self.optimizer.load_state_dict(state)
        for group, values in zip(self.optimizer.param_groups, fresh):
            group.update(values)
            group.pop("initial_lr", None)
            group.pop("initial_momentum", None)
