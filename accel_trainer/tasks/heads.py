"""The detection heads `model.head` names: one entry per torchvision detector on the timm trunk + FPN.

Each entry says everything the detector code would otherwise decide by the head's name: which
trunk levels feed the FPN and which levels the FPN adds above them, the anchors per level, the
torchvision constructor, the label offset, the post-processing keys it takes and where the trunk's
weights sit in its state dict. torchvision is imported inside the builders, so reading the table
(the recipe check at load) stays light.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import RecipeError, did_you_mean

if TYPE_CHECKING:
    from torch import nn
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.ops.feature_pyramid_network import ExtraFPNBlock

# torchvision's post-processing arguments, as the `[model]` keys name them.
POSTPROCESS_KEYS = ("score_thresh", "nms_thresh", "detections_per_img", "topk_candidates")


@dataclass(frozen=True)
class HeadSpec:
    """How one head is built and read.

    `extra_block(c5_channels, fpn_channels)` builds the FPN's levels above the trunk's
    (`extra_levels` of them); `anchor_sizes(stride)` gives one FPN level's anchor sizes, expressed
    per stride so any trunk works; `construct(backbone, num_classes, anchors, **kwargs)` builds the
    detector, `num_classes` counting the background when `label_offset` keeps label 0 for it.
    """

    title: str
    trunk_levels: int
    extra_block: Callable[[int, int], ExtraFPNBlock]
    extra_levels: int
    anchor_sizes: Callable[[int], tuple[int, ...]]
    aspect_ratios: tuple[float, ...]
    construct: Callable[..., nn.Module]
    label_offset: int = 0
    # The POSTPROCESS_KEYS the head takes, and the prefix of torchvision's argument names for them.
    postprocess_keys: tuple[str, ...] = POSTPROCESS_KEYS
    postprocess_prefix: str = ""
    # Where the timm trunk's weights sit in the detector's state dict (`export --backbone-only`).
    trunk_prefix: str = "backbone.body."


def _p6p7_from_p5(c5_channels: int, fpn_channels: int) -> ExtraFPNBlock:
    from torchvision.ops.feature_pyramid_network import LastLevelP6P7

    return LastLevelP6P7(fpn_channels, fpn_channels)


def _p6p7_from_c5(c5_channels: int, fpn_channels: int) -> ExtraFPNBlock:
    from torchvision.ops.feature_pyramid_network import LastLevelP6P7

    return LastLevelP6P7(c5_channels, fpn_channels)


def _max_pool(c5_channels: int, fpn_channels: int) -> ExtraFPNBlock:
    from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

    return LastLevelMaxPool()


def _fcos(backbone: nn.Module, num_classes: int, anchors: AnchorGenerator, **kwargs: Any) -> nn.Module:
    from torchvision.models.detection import FCOS

    return FCOS(backbone, num_classes, anchor_generator=anchors, **kwargs)


def _retinanet(backbone: nn.Module, num_classes: int, anchors: AnchorGenerator, **kwargs: Any) -> nn.Module:
    from torchvision.models.detection import RetinaNet

    return RetinaNet(backbone, num_classes, anchor_generator=anchors, **kwargs)


def _faster_rcnn(backbone: nn.Module, num_classes: int, anchors: AnchorGenerator, **kwargs: Any) -> nn.Module:
    """The RPN runs on every FPN level, the box head pools RoIs from the trunk's levels only."""
    from torchvision.models.detection import FasterRCNN
    from torchvision.ops import MultiScaleRoIAlign

    roi_pool = MultiScaleRoIAlign(backbone.trunk_level_names, output_size=7, sampling_ratio=2)
    return FasterRCNN(backbone, num_classes, rpn_anchor_generator=anchors, box_roi_pool=roi_pool, **kwargs)


# FCOS and RetinaNet take the last 3 trunk levels plus P6/P7 (FCOS from P5, RetinaNet from C5, as
# mmdet's `add_extra_convs`); Faster R-CNN the last 4 plus a max-pooled level for the RPN, and its
# box head takes the post-processing keys with a `box_` prefix and has no `topk_candidates`.
HEADS: dict[str, HeadSpec] = {
    "fcos": HeadSpec(
        title="FCOS",
        trunk_levels=3,
        extra_block=_p6p7_from_p5,
        extra_levels=2,
        anchor_sizes=lambda stride: (stride,),
        aspect_ratios=(1.0,),
        construct=_fcos,
    ),
    "retinanet": HeadSpec(
        title="RetinaNet",
        trunk_levels=3,
        extra_block=_p6p7_from_c5,
        extra_levels=2,
        anchor_sizes=lambda stride: tuple(int(4 * stride * 2 ** (k / 3)) for k in range(3)),
        aspect_ratios=(0.5, 1.0, 2.0),
        construct=_retinanet,
    ),
    "faster_rcnn": HeadSpec(
        title="Faster R-CNN",
        trunk_levels=4,
        extra_block=_max_pool,
        extra_levels=1,
        anchor_sizes=lambda stride: (8 * stride,),
        aspect_ratios=(0.5, 1.0, 2.0),
        construct=_faster_rcnn,
        label_offset=1,
        postprocess_keys=("score_thresh", "nms_thresh", "detections_per_img"),
        postprocess_prefix="box_",
    ),
}


def check_head(name: str) -> None:
    """Refuse a `model.head` the table lacks, naming the heads it has (checked at load)."""
    if name not in HEADS:
        raise RecipeError(
            f"model.head = {name!r} is not allowed{did_you_mean(str(name), HEADS)}; "
            f"expected one of: {', '.join(map(repr, HEADS))}"
        )


def head_spec(name: str) -> HeadSpec:
    """The entry `model.head` names (refused as `check_head` does, for a recipe built without loading)."""
    check_head(name)
    return HEADS[name]


def postprocess_kwargs(name: str, values: dict[str, Any]) -> dict[str, Any]:
    """torchvision's arguments for the post-processing keys a recipe sets (`values`: key -> value)."""
    spec = head_spec(name)
    kwargs = {}
    for key, value in values.items():
        if key not in spec.postprocess_keys:
            takers = "/".join(s.title for s in HEADS.values() if key in s.postprocess_keys)
            raise RecipeError(f'model.{key} is an {takers} setting; head = "{name}" has none')
        kwargs[spec.postprocess_prefix + key] = value
    return kwargs
