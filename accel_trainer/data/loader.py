"""DataLoader construction shared by every task."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from typing import Any

import torch
from accelerate.data_loader import BatchSamplerShard
from torch.utils.data import DataLoader, Dataset

from ..recipe.data_section import DataCfg
from ..recipe.root import Recipe
from .sampling import EpochSampler, SeededDataset


def pins_memory(data: DataCfg) -> bool:
    """Pinned pages only help a copy to an accelerator; without one torch warns on every loader."""
    return data.pin_memory and torch.accelerator.is_available()


def leave_stop_signals_to_the_main_process(worker_id: int) -> None:
    """Loader workers ignore SIGINT and SIGUSR1, and SIGTERM from anyone but their parent.

    Schedulers signal every process of a job, and Ctrl-C every process of the terminal's group: a
    worker that died of it would fail the step the main process is finishing for its preemption
    checkpoint. The main process decides when to stop (`loop/preemption.py`). SIGTERM from the parent
    is how it ends a worker that does not stop in time, so that one still ends it (where the
    platform tells who sent a signal; elsewhere torch's own SIGTERM handling stays).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    if hasattr(signal, "sigwaitinfo"):
        # Blocked here and in every thread started from here: only the waiting thread takes it.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        threading.Thread(target=_exit_on_sigterm_from, args=(os.getppid(),), daemon=True).start()


def _exit_on_sigterm_from(parent: int) -> None:
    while True:
        if signal.sigwaitinfo({signal.SIGTERM}).si_pid == parent:
            os._exit(0)


def build_loader(
    dataset: Dataset,
    recipe: Recipe,
    *,
    batch_size: int,
    train: bool,
    collate_fn: Callable | None = None,
    drop_last: bool = False,
) -> DataLoader:
    """A loader over `(epoch, index)` items; Accelerate later shards its batches per process.

    `drop_last` leaves out an epoch's incomplete last batch (for training steps that need full ones).
    """
    data = recipe.data
    extra: dict[str, Any] = {}
    if data.num_workers > 0:
        extra = dict(
            persistent_workers=data.persistent_workers,
            prefetch_factor=data.prefetch_factor,
            multiprocessing_context=recipe.mp_start_method,
            worker_init_fn=leave_stop_signals_to_the_main_process,
        )
    return DataLoader(
        SeededDataset(dataset, recipe.accelerate.seed),
        batch_size=batch_size,
        sampler=EpochSampler(len(dataset), recipe.accelerate.seed, shuffle=train),  # type: ignore[arg-type]
        num_workers=data.num_workers,
        pin_memory=pins_memory(data),
        drop_last=drop_last,
        collate_fn=collate_fn,
        # Worker base seeds come from this generator, not the global RNG, so creating an
        # iterator (one more on a resumed run) never shifts the model's random stream.
        generator=torch.Generator().manual_seed(recipe.accelerate.seed),
        **extra,
    )


def batches_per_process(loader: DataLoader, num_processes: int) -> int:
    """Batches each process draws from `loader` once Accelerate shards it across `num_processes`.

    Counted by Accelerate's own batch-sampler shard (even batches, its default), so the count
    equals the prepared loader's length without building or iterating it.
    """
    if num_processes <= 1:
        return len(loader)
    return len(BatchSamplerShard(loader.batch_sampler, num_processes=num_processes))
