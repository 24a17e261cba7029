"""The Accelerator a recipe asks for, and what Accelerate leaves to the caller: CPU-only launches,
restarted process groups, CPU threads, SyncBatchNorm and the channels_last (NHWC) layout.

channels_last: convolutions on tensor cores read NHWC without the transposes NCHW costs; both the
weights and the image batches have to be NHWC for the fast kernels to be picked.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import psutil
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import (
    DataLoaderConfiguration,
    DistributedDataParallelKwargs,
    DistributedType,
    InitProcessGroupKwargs,
    ProjectConfiguration,
    recursively_apply,
)
from timm.layers import convert_sync_batchnorm
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from .data.loader import pins_memory
from .errors import RecipeError
from .recipe.root import Recipe

if TYPE_CHECKING:
    from torch.distributed import Store

logger = logging.getLogger(__name__)

# Engines `accelerate launch` can ask for that this trainer does not drive (it saves, resumes and
# counts steps for one model replica per process), by the variable the launcher sets.
UNSUPPORTED_ENGINES = {
    "ACCELERATE_USE_FSDP": "FSDP",
    "ACCELERATE_USE_DEEPSPEED": "DeepSpeed",
    "ACCELERATE_USE_MEGATRON_LM": "Megatron-LM",
    "ACCELERATE_USE_PARALLELISM_CONFIG": "a parallelism config (tensor / context parallel)",
}
UNSUPPORTED_TYPES = (DistributedType.FSDP, DistributedType.DEEPSPEED, DistributedType.MEGATRON_LM, DistributedType.XLA)
SUPPORTED = (
    "supported: one process (distributed_type NO, on CPU, GPU or MPS) or DDP over processes and machines "
    "(MULTI_GPU, MULTI_CPU, MULTI_XPU, MULTI_NPU, ...)"
)

# Devices whose tensors torch's SyncBatchNorm can synchronise (it rejects CPU tensors).
SYNC_BN_DEVICES = ("cuda", "xpu", "hpu")


def build_accelerator(recipe: Recipe, log_with: list[str]) -> Accelerator:
    """The recipe's `[accelerate]` settings; what it leaves unset comes from the launcher's config.

    `log_with`: Accelerate tracker names (tensorboard, wandb, ...) the logger hooks write to."""
    refuse_unsupported_engine()
    acc = recipe.accelerate
    # Accelerate keeps precision settings in a process-wide singleton; a second Trainer in the
    # same process (a notebook, a test) gets its own. The process group is kept.
    AcceleratorState._reset_state(reset_partial_state=False)
    process_group = process_group_kwargs()
    accelerator = Accelerator(
        cpu=acc.cpu or launched_without_accelerator(),
        mixed_precision=acc.mixed_precision,
        gradient_accumulation_steps=acc.gradient_accumulation_steps,
        log_with=log_with or None,
        # TensorBoard writes to logging_dir/<project>: work_dir/tf_logs/<work_dir name>, as mmcv's tf_logs.
        project_config=ProjectConfiguration(
            project_dir=recipe.work_dir, logging_dir=str(Path(recipe.work_dir) / "tf_logs")
        ),
        step_scheduler_with_optimizer=False,
        # Parameters frozen for a stage produce no gradients; DDP must not wait for them.
        kwargs_handlers=[
            DistributedDataParallelKwargs(find_unused_parameters=bool(recipe.freeze.epochs)),
            *([InitProcessGroupKwargs(**process_group)] if process_group else []),
        ],
        # None keeps the launcher's choice (`accelerate config`); compile = true asks for inductor.
        dynamo_backend="inductor" if acc.compile else None,
        # Copies from pinned host memory can overlap the previous step's compute.
        dataloader_config=DataLoaderConfiguration(non_blocking=pins_memory(recipe.data)),
    )
    refuse_unsupported_engine(accelerator.distributed_type)  # e.g. XLA, which no variable announces
    return accelerator


def refuse_unsupported_engine(distributed_type: DistributedType | None = None) -> None:
    """Stop at start, in one line, when the launch config asks for an engine this trainer does not drive."""
    for var, name in UNSUPPORTED_ENGINES.items():
        if os.environ.get(var, "false").lower() in ("true", "1", "yes"):
            raise RecipeError(
                f"the accelerate launch config asks for {name} ({var}), which accel_trainer does not "
                f"support; {SUPPORTED}"
            )
    if distributed_type in UNSUPPORTED_TYPES:
        raise RecipeError(f"accelerate distributed_type {distributed_type.value} is not supported; {SUPPORTED}")


# The init_method scheme of `process_group_kwargs`, registered with torch when first needed.
ATTEMPT_SCHEME = "accel-trainer-attempt"


def process_group_kwargs() -> dict[str, str]:
    """`init_process_group` arguments: under `--max_restarts` on one machine, a store of each attempt's own.

    torchrun's agent serves the key-value store the processes meet in and keeps it, keys and all,
    across restarts. torch writes each process's connection address under the same key in every
    attempt, so a restarted process may read the address its peer had in the attempt before and
    connect to a process that is gone: gloo fails with "Connection refused" or hangs. Prefixing
    the keys with the agent's restart count keeps attempts apart. One agent gives every process the
    same count; agents on several machines count on their own, so there torch's default stays.
    """
    env = os.environ
    one_agent = env.get("GROUP_WORLD_SIZE") == "1" and "TORCHELASTIC_RESTART_COUNT" in env
    if env.get("TORCHELASTIC_USE_AGENT_STORE") != "True" or not one_agent:
        return {}
    _register_attempt_rendezvous()
    return {"init_method": f"{ATTEMPT_SCHEME}://"}


@functools.cache
def _register_attempt_rendezvous() -> None:
    from torch.distributed.rendezvous import register_rendezvous_handler

    register_rendezvous_handler(ATTEMPT_SCHEME, _attempt_rendezvous)


def _attempt_rendezvous(url: str, **kwargs: Any) -> Iterator[tuple[Store, int, int]]:
    """torch's env:// rendezvous, its store seen under this attempt's prefix."""
    from torch.distributed import PrefixStore
    from torch.distributed.rendezvous import rendezvous

    query = urlparse(url).query
    store, rank, world_size = next(rendezvous(f"env://?{query}" if query else "env://", **kwargs))
    yield PrefixStore(f"attempt_{os.environ['TORCHELASTIC_RESTART_COUNT']}", store), rank, world_size


def announce_hardware(accelerator: Accelerator, cpu_threads: int) -> None:
    """Log where the run trains; on a CPU first settle the thread count, which is its speed."""
    threads = ""
    if accelerator.device.type == "cpu":
        count = configure_cpu_threads(cpu_threads, accelerator.num_processes)
        threads = f" ({count} thread{'s' if count != 1 else ''})"
    logger.info(
        "accelerate: %s, %d processes, device %s%s, mixed_precision %s, gradient_accumulation_steps %d",
        accelerator.distributed_type.value,
        accelerator.num_processes,
        accelerator.device,
        threads,
        accelerator.mixed_precision,
        accelerator.gradient_accumulation_steps,
    )


def launched_without_accelerator() -> bool:
    """Several processes were started (torchrun-style) on a machine with no GPU.

    `accelerate launch` with a multi-process config starts the processes but does not tell them
    to use the CPU; without `cpu=True` each one would train alone as rank 0. With it they join
    one process group over gloo (Accelerate's MULTI_CPU).
    """
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.accelerator.is_available()


# Set in every process a launcher starts: `accelerate launch` (both its launchers) and torchrun.
LAUNCHER_VARS = ("ACCELERATE_MIXED_PRECISION", "TORCHELASTIC_RUN_ID", "LOCAL_RANK")


def started_by_launcher() -> bool:
    return any(name in os.environ for name in LAUNCHER_VARS)


def configure_cpu_threads(requested: int, num_processes: int) -> int:
    """Set the torch threads of a CPU run; return how many it has.

    Launchers (a bare `accelerate launch` with no config, torchrun) export OMP_NUM_THREADS=1,
    which on a CPU-only machine trains on one core. With `requested = 0` a launcher's single
    thread is replaced by the physical cores this process may use, shared among the machine's
    processes. Without a launcher an OMP_NUM_THREADS=1 is the user's and is kept, as is any
    other value (a launcher passes the user's own value on, so under one `requested` is how to
    insist on one thread). `requested > 0` sets exactly that many.
    """
    if requested > 0:
        torch.set_num_threads(requested)
    elif os.environ.get("OMP_NUM_THREADS") == "1" and started_by_launcher():
        usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        cores = min(psutil.cpu_count(logical=False) or usable, usable)
        local = int(os.environ.get("LOCAL_WORLD_SIZE", num_processes))
        torch.set_num_threads(max(1, cores // max(1, local)))
    return torch.get_num_threads()


def maybe_sync_batchnorm(model: nn.Module, enabled: bool, num_processes: int, device: torch.device) -> nn.Module:
    """Swap BatchNorm layers (timm's BatchNormAct included) for synchronised ones when it pays.

    One process has nothing to synchronise; CPU tensors are not supported by SyncBatchNorm, so
    a CPU run keeps per-process statistics and says so.
    """
    if not enabled or num_processes <= 1:
        return model
    if device.type not in SYNC_BN_DEVICES:
        logger.warning(
            "sync_bn: SyncBatchNorm needs %s tensors; keeping per-process BatchNorm on %s",
            "/".join(SYNC_BN_DEVICES),
            device.type,
        )
        return model
    count = sum(isinstance(m, _BatchNorm) for m in model.modules())
    model = convert_sync_batchnorm(model)
    logger.info("sync_bn: %d BatchNorm layers -> SyncBatchNorm across %d processes", count, num_processes)
    return model


def model_to_channels_last(model: nn.Module) -> nn.Module:
    """4-d weights (convolutions) to NHWC; other parameters are left as they are."""
    return model.to(memory_format=torch.channels_last)


def _nhwc(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.contiguous(memory_format=torch.channels_last) if tensor.dim() == 4 else tensor


def batch_to_channels_last(batch: Any) -> Any:
    """Every 4-d tensor in a (nested) batch to NHWC; targets and per-image 3-d tensors unchanged."""
    return recursively_apply(_nhwc, batch)
