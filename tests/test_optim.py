"""Optimizer construction: mmcv 1.x paramwise rules, group merging, optimizer lookup, errors."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import timm
import timm.layers
import timm.optim
import torch
from torch import nn

from accel_trainer.errors import RecipeError
from accel_trainer.optim import (
    GroupInfo,
    OptimizerSpec,
    ParamwiseSpec,
    build_optimizer,
    build_param_groups,
    format_param_group_table,
    scale_lr,
)

LR, WD = 0.1, 1e-4


class Net(nn.Module):
    """backbone.{conv, bn, dw, ln} + head: one of each kind of tensor the rules tell apart."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(
            OrderedDict(
                conv=nn.Conv2d(3, 8, 3),
                bn=nn.BatchNorm2d(8),
                dw=nn.Conv2d(8, 8, 3, groups=8),
                ln=nn.LayerNorm(8),
            )
        )
        self.head = nn.Linear(8, 4)


def settings(model: nn.Module, groups: list[dict]) -> dict[str, tuple[float, float | None]]:
    """Parameter name -> (lr, weight_decay) of the group holding it."""
    by_id = {id(p): (g["lr"], g.get("weight_decay")) for g in groups for p in g["params"]}
    return {name: by_id[id(p)] for name, p in model.named_parameters()}


def patterns(model: nn.Module, groups: list[dict], infos: list[GroupInfo]) -> dict[str, str]:
    by_id = {id(p): info.pattern for g, info in zip(groups, infos) for p in g["params"]}
    return {name: by_id[id(p)] for name, p in model.named_parameters()}


def assert_partition(model: nn.Module, groups: list[dict]) -> None:
    """Every parameter in exactly one group, nothing else in any group."""
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)), "a parameter is in two groups"
    assert set(ids) == {id(p) for p in model.parameters()}


@pytest.fixture(scope="module")
def resnest() -> nn.Module:
    return timm.create_model("resnest14d", num_classes=4)


def test_no_paramwise_cfg_is_one_default_group():
    model = Net()
    groups, infos = build_param_groups(model, LR, WD, ParamwiseSpec())
    assert len(groups) == 1 and infos[0].pattern == "default"
    assert set(settings(model, groups).values()) == {(LR, WD)}
    assert_partition(model, groups)


def test_disable_bn_wd_norm_and_bias_decay():
    model = Net()
    groups, infos = build_param_groups(
        model, LR, WD, ParamwiseSpec.from_config({"norm_decay_mult": 0.0, "bias_decay_mult": 0.0}, WD)
    )
    s = settings(model, groups)
    for name in (
        "backbone.bn.weight",
        "backbone.bn.bias",
        "backbone.ln.weight",
        "backbone.ln.bias",
        "backbone.conv.bias",
        "head.bias",
    ):
        assert s[name] == (LR, 0.0), name
    for name in ("backbone.conv.weight", "head.weight", "backbone.dw.weight"):
        assert s[name] == (LR, WD), name
    # mmcv: a depthwise conv's bias follows the dwconv rule (mult 1 here), not bias_decay_mult
    assert s["backbone.dw.bias"] == (LR, WD)
    p = patterns(model, groups, infos)
    assert p["backbone.bn.weight"] == "norm" and p["head.bias"] == "bias" and p["head.weight"] == "default"


def test_bias_lr_mult_skips_norm_biases():
    model = Net()
    groups, _ = build_param_groups(model, LR, WD, ParamwiseSpec.from_config({"bias_lr_mult": 2.0}, WD))
    s = settings(model, groups)
    for name in ("backbone.conv.bias", "backbone.dw.bias", "head.bias"):
        assert s[name] == (pytest.approx(2 * LR), WD), name
    for name in ("backbone.bn.bias", "backbone.ln.bias", "head.weight", "backbone.bn.weight"):
        assert s[name] == (LR, WD), name


def test_dwconv_decay_mult_and_detection():
    model = nn.Sequential(
        OrderedDict(
            dw=nn.Conv2d(8, 16, 3, groups=8),  # groups == in_channels: depthwise (channel multiplier 2)
            grouped=nn.Conv2d(8, 8, 3, groups=4),
            dense=nn.Conv2d(8, 8, 3),
        )
    )
    groups, infos = build_param_groups(
        model, LR, WD, ParamwiseSpec.from_config({"dwconv_decay_mult": 0.5, "bias_decay_mult": 0.0}, WD)
    )
    s = settings(model, groups)
    assert s["dw.weight"] == s["dw.bias"] == (LR, pytest.approx(0.5 * WD))
    assert s["grouped.weight"] == s["dense.weight"] == (LR, WD)
    assert s["grouped.bias"] == s["dense.bias"] == (LR, 0.0)
    assert patterns(model, groups, infos)["dw.bias"] == "dwconv"


def test_custom_keys_longest_key_wins_and_overrides_other_rules():
    model = Net()
    cfg = {
        "norm_decay_mult": 0.0,
        "custom_keys": {
            "backbone": {"lr_mult": 0.1},
            "backbone.bn": {"lr_mult": 0.5, "decay_mult": 2.0},
            "bn": {"lr_mult": 3.0},
        },
    }
    groups, infos = build_param_groups(model, LR, WD, ParamwiseSpec.from_config(cfg, WD))
    s = settings(model, groups)
    assert s["backbone.bn.weight"] == (pytest.approx(0.5 * LR), pytest.approx(2 * WD))
    assert s["backbone.conv.weight"] == (pytest.approx(0.1 * LR), WD)
    # the custom key wins over norm_decay_mult: a matched norm layer keeps the full decay
    assert s["backbone.ln.weight"] == (pytest.approx(0.1 * LR), WD)
    assert s["head.weight"] == (LR, WD)
    p = patterns(model, groups, infos)
    assert p["backbone.bn.bias"] == "custom_keys['backbone.bn']"
    assert p["backbone.conv.bias"] == "custom_keys['backbone']"


def test_custom_keys_equal_length_tie_goes_to_alphabetical_first():
    model = Net()
    # both 4 characters long and both in "backbone.conv.weight"; mmcv picks "bone" over "conv"
    cfg = {"custom_keys": {"conv": {"lr_mult": 3.0}, "bone": {"lr_mult": 0.5}}}
    groups, _ = build_param_groups(model, LR, WD, ParamwiseSpec.from_config(cfg, WD))
    assert settings(model, groups)["backbone.conv.weight"][0] == pytest.approx(0.5 * LR)


def test_custom_keys_see_mmcv_names_of_top_level_parameters():
    model = nn.Linear(2, 2)  # mmcv matches against ".weight" / ".bias" at the top level
    groups, _ = build_param_groups(
        model, LR, WD, ParamwiseSpec.from_config({"custom_keys": {".weight": {"lr_mult": 0.0}}}, WD)
    )
    s = settings(model, groups)
    assert s["weight"] == (0.0, WD) and s["bias"] == (LR, WD)


def test_timm_norm_layers_are_norms():
    model = nn.Sequential(
        OrderedDict(
            bnact=timm.layers.BatchNormAct2d(4),
            gnact=timm.layers.GroupNormAct(4, num_groups=2),
            ln2d=timm.layers.LayerNorm2d(4),
            rms=timm.layers.RmsNorm(4),
            evo=timm.layers.EvoNorm2dS0(4),
            inorm=nn.InstanceNorm2d(4, affine=True),
            gn=nn.GroupNorm(2, 4),
            conv=nn.Conv2d(4, 4, 1),
        )
    )
    groups, _ = build_param_groups(model, LR, WD, ParamwiseSpec.from_config({"norm_decay_mult": 0.0}, WD))
    for name, (_, wd) in settings(model, groups).items():
        assert wd == (WD if name.startswith("conv.") else 0.0), name


def test_resnest_disable_bn_wd_merges_into_three_groups(resnest):
    groups, infos = build_param_groups(
        resnest, LR, WD, ParamwiseSpec.from_config({"norm_decay_mult": 0.0, "bias_decay_mult": 0.0}, WD)
    )
    assert_partition(resnest, groups)
    assert [i.pattern for i in infos] == ["default", "norm", "bias"]
    norm_params = [p for m in resnest.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters()]
    norm = infos[1]
    assert norm.num_tensors == len(norm_params) and norm.num_params == sum(p.numel() for p in norm_params)
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in norm_params}
    assert (norm.lr, norm.weight_decay) == (LR, 0.0)
    assert sum(i.num_tensors for i in infos) == len(list(resnest.parameters()))
    assert sum(i.num_params for i in infos) == sum(p.numel() for p in resnest.parameters())


def test_frozen_parameters_are_kept_and_follow_the_rules(resnest):
    model = Net()
    model.backbone.requires_grad_(False)
    groups, _ = build_param_groups(model, LR, WD, ParamwiseSpec.from_config({"norm_decay_mult": 0.0}, WD))
    assert_partition(model, groups)
    assert settings(model, groups)["backbone.bn.weight"] == (LR, 0.0)

    resnest.conv1.requires_grad_(False)
    try:
        optimizer, _ = build_optimizer(
            resnest, OptimizerSpec.from_config({"type": "SGD", "lr": LR, "paramwise_cfg": {"bias_lr_mult": 2.0}})
        )
    finally:
        resnest.conv1.requires_grad_(True)
    assert_partition(resnest, optimizer.param_groups)


@pytest.mark.parametrize("bypass", [False, True])
def test_shared_parameters_appear_once(bypass):
    model = Net()
    model.alias = model.head  # the same module under a second name
    model.tied = nn.Linear(8, 4)
    model.tied.weight = model.head.weight  # one tensor owned by two modules
    paramwise = {"bypass_duplicate": bypass, "bias_lr_mult": 2.0}
    cfg = {"type": "SGD", "lr": LR, "weight_decay": WD, "paramwise_cfg": paramwise}
    optimizer, infos = build_optimizer(model, OptimizerSpec.from_config(cfg))
    assert_partition(model, optimizer.param_groups)
    assert sum(i.num_tensors for i in infos) == len(list(model.parameters()))


def test_torch_optimizer_by_name_with_betas_list():
    model = Net()
    optimizer, infos = build_optimizer(
        model, OptimizerSpec.from_config({"type": "AdamW", "lr": 1e-3, "betas": [0.9, 0.95], "weight_decay": 0.05})
    )
    assert type(optimizer) is torch.optim.AdamW
    assert optimizer.defaults["betas"] == (0.9, 0.95) and isinstance(optimizer.defaults["betas"], tuple)
    assert (infos[0].lr, infos[0].weight_decay) == (1e-3, 0.05)
    lamb, _ = build_optimizer(
        model, OptimizerSpec.from_config({"type": "Lamb", "lr": 1e-3, "betas": [0.9, 0.95]})
    )  # timm keeps what it gets
    assert isinstance(lamb.defaults["betas"], tuple)
    sgd, _ = build_optimizer(
        model, OptimizerSpec.from_config({"type": "SGD", "lr": 0.1, "momentum": 0.9, "nesterov": True})
    )
    assert type(sgd) is torch.optim.SGD and sgd.defaults["nesterov"] is True


@pytest.mark.parametrize("name", ["Lamb", "Lars", "AdamP", "Lion", "timm.Adafactor"])
def test_timm_optimizer_by_name(name):
    optimizer, _ = build_optimizer(Net(), OptimizerSpec.from_config({"type": name, "lr": 1e-3}))
    assert type(optimizer) is getattr(timm.optim, name.removeprefix("timm."))


def test_torch_wins_a_name_clash():
    optimizer, _ = build_optimizer(Net(), OptimizerSpec.from_config({"type": "Adafactor", "lr": 1e-3}))
    assert type(optimizer) is torch.optim.Adafactor


def test_infos_report_optimizer_defaults_when_weight_decay_is_unset():
    model = Net()
    optimizer, infos = build_optimizer(
        model, OptimizerSpec.from_config({"type": "AdamW", "lr": 1e-3, "paramwise_cfg": {"bias_lr_mult": 2.0}})
    )
    assert all("weight_decay" in g for g in optimizer.param_groups)
    assert {i.weight_decay for i in infos} == {0.01}  # AdamW's default
    assert {i.pattern: i.lr for i in infos} == {"default": 1e-3, "bias": 2e-3}


@pytest.mark.parametrize(
    "name, hint",
    [("SDG", 'did you mean "SGD"'), ("LARS", 'did you mean "Lars"'), ("adamw", 'did you mean "AdamW"')],
)
def test_unknown_optimizer_type(name, hint):
    with pytest.raises(RecipeError) as err:
        build_optimizer(Net(), OptimizerSpec.from_config({"type": name, "lr": 0.1}))
    msg = str(err.value)
    assert "optimizer.type" in msg and repr(name) in msg and hint in msg
    assert "RMSprop" in msg and "Lamb" in msg


def test_unknown_optimizer_argument_lists_accepted_ones():
    with pytest.raises(RecipeError) as err:
        build_optimizer(Net(), OptimizerSpec.from_config({"type": "SGD", "lr": 0.1, "momentun": 0.9}))
    msg = str(err.value)
    assert "optimizer.momentun" in msg and 'did you mean "momentum"' in msg
    assert "nesterov" in msg and "dampening" in msg
    with pytest.raises(RecipeError, match=r"optimizer\.momentum.*Lamb accepts: .*betas"):
        build_optimizer(Net(), OptimizerSpec.from_config({"type": "Lamb", "lr": 0.1, "momentum": 0.9}))


@pytest.mark.parametrize(
    "cfg, expected",
    [
        ({"norm_decay_mul": 0.0}, ["optimizer.paramwise_cfg.norm_decay_mul", 'did you mean "norm_decay_mult"']),
        (
            {"custom_keys": {"backbone.bn": {"lr_mul": 0.1}}},
            ['optimizer.paramwise_cfg.custom_keys."backbone.bn".lr_mul', 'did you mean "lr_mult"'],
        ),
        ({"custom_keys": {"head": 0.1}}, ["optimizer.paramwise_cfg.custom_keys.head"]),
        ({"bias_lr_mult": "2"}, ["optimizer.paramwise_cfg.bias_lr_mult", "expected a number"]),
        ({"bypass_duplicate": 1}, ["optimizer.paramwise_cfg.bypass_duplicate"]),
        ({"dcn_offset_lr_mult": 0.1}, ["dcn_offset_lr_mult", "deformable"]),
    ],
)
def test_bad_paramwise_cfg(cfg, expected):
    with pytest.raises(RecipeError) as err:
        build_optimizer(
            Net(), OptimizerSpec.from_config({"type": "SGD", "lr": 0.1, "weight_decay": WD, "paramwise_cfg": cfg})
        )
    for text in expected:
        assert text in str(err.value)


@pytest.mark.parametrize(
    "paramwise",
    [{"norm_decay_mult": 0.0}, {"custom_keys": {"head": {"decay_mult": 0.0}}}],
)
def test_decay_mults_need_weight_decay(paramwise):
    with pytest.raises(RecipeError, match=r"needs optimizer\.weight_decay"):
        build_optimizer(Net(), OptimizerSpec.from_config({"type": "SGD", "lr": 0.1, "paramwise_cfg": paramwise}))


@pytest.mark.parametrize(
    "cfg, text",
    [
        ({"lr": 0.1}, "optimizer.type is missing"),
        ({"type": "SGD"}, "optimizer.lr is missing"),
        ({"type": "SGD", "lr": -1.0}, "SGD rejected the settings: Invalid learning rate"),
        ({"type": "SGD", "lr": 0.1, "constructor": "LayerDecayOptimizerConstructor"}, "optimizer.constructor"),
    ],
)
def test_bad_optimizer_table(cfg, text):
    with pytest.raises(RecipeError, match=text):
        build_optimizer(Net(), OptimizerSpec.from_config(cfg))


def test_param_group_table():
    infos = [GroupInfo("default", 12, 34567, 0.1, 1e-4), GroupInfo("custom_keys['head']", 2, 36, 0.01, 0.0)]
    lines = format_param_group_table(infos).splitlines()
    assert lines[0].split() == ["pattern", "#tensors", "#params", "lr", "weight_decay"]
    assert lines[1].split() == ["default", "12", "34,567", "0.1", "0.0001"]
    assert lines[2].split() == ["custom_keys['head']", "2", "36", "0.01", "0"]
    assert lines[3].split() == ["total", "14", "34,603"]
    tensors_end = lines[0].index("#tensors") + len("#tensors")
    assert lines[1].index("12") + 2 == lines[2].index(" 2 ") + 2 == tensors_end  # numbers right-aligned


def test_scale_lr():
    assert scale_lr(0.1, num_processes=4, batch_size=64, accumulation=2, base_batch_size=256) == pytest.approx(0.2)
    assert scale_lr(0.1, num_processes=1, batch_size=16, accumulation=1, base_batch_size=256) == pytest.approx(0.00625)
