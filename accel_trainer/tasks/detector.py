"""A detector of the heads table: a timm trunk + torchvision FPN under the head `model.head` names.

Only the table (`heads.py`) knows the heads apart; the trunk, its frozen stages and the
`[model]` keys that reach torchvision are the same for every head.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.ops import FeaturePyramidNetwork

from ..checkpoint.pretrained import load_into, resolve
from ..errors import RecipeError
from ..recipe.model_section import ModelCfg
from .base import create_timm_model
from .heads import POSTPROCESS_KEYS, head_spec, postprocess_kwargs

FPN_CHANNELS = 256


class DetectorBackbone(nn.Module):
    """timm trunk (`features_only`) + FPN, returning the OrderedDict torchvision's heads expect.

    `train()` re-applies mmdet's ResNet rules each time it runs: the stem and the first
    `frozen_stages` stages get `requires_grad=False` and stay in eval mode, and with `norm_eval`
    every BatchNorm of the trunk stays in eval mode (running stats frozen, affine still trained).
    Re-applying on every `train()` keeps frozen stages frozen after a `[freeze]` stage thaws the
    backbone, since the freeze hook resets train mode after changing `requires_grad`.
    """

    def __init__(self, body: nn.Module, fpn: FeaturePyramidNetwork, frozen: list[str], norm_eval: bool) -> None:
        super().__init__()
        self.body = body
        self.fpn = fpn
        self.out_channels = FPN_CHANNELS
        # The FPN's names of the trunk's levels (the levels an extra block adds come after them).
        self.trunk_level_names = [str(i) for i in range(len(body.feature_info.channels()))]
        self.frozen = frozen
        self.norm_eval = norm_eval
        self._apply_frozen()

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        return self.fpn(OrderedDict(zip(self.trunk_level_names, self.body(x))))

    def _apply_frozen(self) -> None:
        for name in self.frozen:
            module = self.body.get_submodule(name)
            module.eval()
            module.requires_grad_(False)

    def train(self, mode: bool = True) -> DetectorBackbone:
        super().train(mode)
        self._apply_frozen()
        if mode and self.norm_eval:
            for m in self.body.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()
        return self


def frozen_children(body: nn.Module, frozen_stages: int) -> list[str]:
    """Top-level trunk modules up to the end of stage `frozen_stages` (0: the stem only).

    Stages are timm's feature levels at stride >= 4 (ResNet's layer1..layer4); everything
    before stage 1 is the stem.
    """
    if frozen_stages < 0:
        return []
    stages = [info["module"].replace(".", "_") for info in body.feature_info.info if info["reduction"] >= 4]
    if frozen_stages > len(stages):
        raise RecipeError(f"model.frozen_stages = {frozen_stages} but the backbone has {len(stages)} stages")
    children = [name for name, _ in body.named_children()]
    if not all(s in children for s in stages):
        raise RecipeError(
            f"model.frozen_stages: cannot find the stages {stages} among the backbone's modules {children}"
        )
    end = children.index(stages[frozen_stages - 1]) + 1 if frozen_stages else children.index(stages[0])
    return children[:end]


def build_body(m: ModelCfg, num_levels: int) -> nn.Module:
    """The timm trunk returning its last `num_levels` feature maps.

    Pretrained weights are fitted (with a report) into the headless classifier first, then handed
    to timm as that model's state dict, so timm cuts it to features as it does its own weights.
    """
    kwargs: dict[str, Any] = dict(features_only=True, out_indices=num_levels)
    if m.drop_path_rate:
        kwargs["drop_path_rate"] = m.drop_path_rate
    source = resolve(m.backbone, m.pretrained)
    name = source.name if source else m.backbone
    if source is not None:
        trunk = create_timm_model(name, num_classes=0)
        load_into(trunk, source, classifier=trunk.pretrained_cfg.get("classifier") or ())
        kwargs.update(pretrained=True, pretrained_cfg_overlay=dict(state_dict=trunk.state_dict()))
    return create_timm_model(name, **kwargs)


def head_kwargs(m: ModelCfg, image_mean: list[float], image_std: list[float], skip_resize: bool) -> dict[str, Any]:
    """torchvision constructor arguments from the `[model]` keys that are set."""
    kwargs: dict[str, Any] = dict(min_size=m.min_size, max_size=m.max_size, image_mean=image_mean, image_std=image_std)
    if skip_resize:
        kwargs["_skip_resize"] = True
    postprocess = {key: getattr(m, key) for key in POSTPROCESS_KEYS if getattr(m, key) is not None}
    return {**kwargs, **postprocess_kwargs(m.head, postprocess)}


def build_detector(m: ModelCfg, skip_resize: bool = False) -> nn.Module:
    """The torchvision detector of `model.head`'s entry in the heads table on a timm trunk + FPN."""
    head = head_spec(m.head)
    body = build_body(m, head.trunk_levels)
    channels, strides = body.feature_info.channels(), body.feature_info.reduction()
    strides = [*strides, *(strides[-1] * 2 ** (k + 1) for k in range(head.extra_levels))]
    fpn = FeaturePyramidNetwork(channels, FPN_CHANNELS, extra_blocks=head.extra_block(channels[-1], FPN_CHANNELS))
    backbone = DetectorBackbone(body, fpn, frozen_children(body, m.frozen_stages), m.norm_eval)
    cfg = body.pretrained_cfg
    kwargs = head_kwargs(m, list(cfg["mean"]), list(cfg["std"]), skip_resize)
    anchors = AnchorGenerator(tuple(head.anchor_sizes(s) for s in strides), (head.aspect_ratios,) * len(strides))
    return head.construct(backbone, m.num_classes + head.label_offset, anchors, **kwargs)
