"""Multi-process decisions Accelerate leaves to the caller: CPU-only launches and SyncBatchNorm."""
from __future__ import annotations

import logging
import os

import torch
from timm.layers import convert_sync_batchnorm
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

logger = logging.getLogger("accel_trainer")

# Devices whose tensors torch's SyncBatchNorm can synchronise (it rejects CPU tensors).
SYNC_BN_DEVICES = ("cuda", "xpu", "hpu")


def launched_without_accelerator() -> bool:
    """Several processes were started (torchrun-style) on a machine with no GPU.

    `accelerate launch` with a multi-process config starts the processes but does not tell them
    to use the CPU; without `cpu=True` each one would train alone as rank 0. With it they join
    one process group over gloo (Accelerate's MULTI_CPU).
    """
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.accelerator.is_available()


def maybe_sync_batchnorm(model: nn.Module, enabled: bool, num_processes: int, device: torch.device) -> nn.Module:
    """Swap BatchNorm layers (timm's BatchNormAct included) for synchronised ones when it pays.

    One process has nothing to synchronise; CPU tensors are not supported by SyncBatchNorm, so
    a CPU run keeps per-process statistics and says so.
    """
    if not enabled or num_processes <= 1:
        return model
    if device.type not in SYNC_BN_DEVICES:
        logger.warning("sync_bn: SyncBatchNorm needs %s tensors; keeping per-process BatchNorm on %s",
                       "/".join(SYNC_BN_DEVICES), device.type)
        return model
    count = sum(isinstance(m, _BatchNorm) for m in model.modules())
    model = convert_sync_batchnorm(model)
    logger.info("sync_bn: %d BatchNorm layers -> SyncBatchNorm across %d processes", count, num_processes)
    return model
