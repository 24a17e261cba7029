"""channels_last (NHWC): convolutions on tensor cores read it without the transposes NCHW costs.

Both the weights and the image batches have to be NHWC for the fast kernels to be picked.
"""
from __future__ import annotations

from typing import Any

import torch
from accelerate.utils import recursively_apply
from torch import nn


def model_to_channels_last(model: nn.Module) -> nn.Module:
    """4-d weights (convolutions) to NHWC; other parameters are left as they are."""
    return model.to(memory_format=torch.channels_last)


def _nhwc(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.contiguous(memory_format=torch.channels_last) if tensor.dim() == 4 else tensor


def batch_to_channels_last(batch: Any) -> Any:
    """Every 4-d tensor in a (nested) batch to NHWC; targets and per-image 3-d tensors unchanged."""
    return recursively_apply(_nhwc, batch)
