"""The optimizer: the recipe's `[optimizer]` table parsed once, at load, into an `OptimizerSpec`,
and built from it on the model, keeping mmcv 1.x semantics.

`type` names a `torch.optim` class (preferred on a name clash) or a `timm.optim` class
(`"timm.<Name>"` picks timm's explicitly); every other key except `paramwise_cfg` and
`constructor` is passed to its constructor. `paramwise_cfg` follows mmcv 1.x's
DefaultOptimizerConstructor rule for rule, with two deliberate differences:

* tensors that end up with the same rule, lr and weight decay share one param group (mmcv makes
  one group per tensor, which slows every optimizer step), and each group is described by a
  `GroupInfo` for the log;
* parameters with `requires_grad=False` get the same rules as trainable ones (mmcv gives them
  the optimizer defaults), because the freeze hook makes them trainable again later. Shared
  parameters always appear once, at their first occurrence, whatever `bypass_duplicate` says
  (mmcv without it would hand torch a duplicate, which torch rejects).
"""

from __future__ import annotations

import functools
import inspect
import logging
import re
import types
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.instancenorm import _InstanceNorm

from .errors import RecipeError, did_you_mean
from .recipe.checks import check_choice, check_keys, finite_number, is_number, join_path
from .recipe.root import Recipe

logger = logging.getLogger(__name__)

PARAMWISE_KEYS = (
    "custom_keys",
    "bias_lr_mult",
    "bias_decay_mult",
    "norm_decay_mult",
    "dwconv_decay_mult",
    "bypass_duplicate",
)
CUSTOM_KEY_KEYS = ("lr_mult", "decay_mult")
DECAY_MULT_KEYS = ("bias_decay_mult", "norm_decay_mult", "dwconv_decay_mult")

# timm norm layers that do not inherit from a torch norm class (BatchNormAct2d, GroupNormAct,
# LayerNorm2d, ... do, and are caught through torch's classes); their subclasses follow.
_TIMM_NORM_NAMES = (
    "RmsNorm",
    "RmsNorm2d",
    "RmsNormFp32",
    "RmsNorm2dFp32",
    "SimpleNorm",
    "SimpleNorm2d",
    "SimpleNormFp32",
    "SimpleNorm2dFp32",
    "EvoNorm2dB0",
    "EvoNorm2dB1",
    "EvoNorm2dB2",
    "EvoNorm2dS0",
    "EvoNorm2dS1",
    "EvoNorm2dS2",
    "FilterResponseNormAct2d",
    "FilterResponseNormTlu2d",
    "FrozenBatchNormAct2d",
)


@functools.cache
def norm_types() -> tuple[type, ...]:
    """The norm layer classes; timm's are looked up when a model is grouped, not to check a recipe."""
    import timm.layers

    timm_norms = (getattr(timm.layers, name) for name in _TIMM_NORM_NAMES if hasattr(timm.layers, name))
    return (_BatchNorm, _InstanceNorm, nn.GroupNorm, nn.LayerNorm, nn.RMSNorm, *timm_norms)


@dataclass(frozen=True)
class GroupInfo:
    """One optimizer param group as the log shows it: which rule made it and its settings."""

    pattern: str
    num_tensors: int
    num_params: int
    lr: float
    weight_decay: float | None


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else '"' + key.replace('"', '\\"') + '"'


def _check_paramwise_cfg(pw: Mapping, base_wd: float | None, path: str) -> None:
    """Reject what mmcv would reject (or silently ignore), naming the offending key."""
    if "dcn_offset_lr_mult" in pw:
        raise RecipeError(
            f"{path}.dcn_offset_lr_mult is not supported: it only acts on mmcv's deformable convolutions "
            "(mmcv.ops), which timm models do not contain; remove it"
        )
    check_keys(pw, PARAMWISE_KEYS, path)
    for key in ("bias_lr_mult", *DECAY_MULT_KEYS):
        if key in pw:
            finite_number(pw[key], f"{path}.{key}")
    if "bypass_duplicate" in pw and not isinstance(pw["bypass_duplicate"], bool):
        raise RecipeError(f"{path}.bypass_duplicate = {pw['bypass_duplicate']!r}: expected true or false")
    wd_path = join_path(path.rpartition(".")[0], "weight_decay")
    for key in DECAY_MULT_KEYS:
        if key in pw and base_wd is None:
            raise RecipeError(f"{path}.{key} needs {wd_path} to be set (it multiplies it)")
    custom = pw.get("custom_keys", {})
    if not isinstance(custom, Mapping):
        raise RecipeError(f"{path}.custom_keys must be a table of key = {{lr_mult = ..., decay_mult = ...}}")
    for key, mults in custom.items():
        key_path = f"{path}.custom_keys.{_toml_key(key)}"
        if not isinstance(mults, Mapping):
            raise RecipeError(f"{key_path} = {mults!r}: expected a table like {{lr_mult = 0.1, decay_mult = 1.0}}")
        check_keys(mults, CUSTOM_KEY_KEYS, key_path)
        for name, value in mults.items():
            finite_number(value, f"{key_path}.{name}")
        if "decay_mult" in mults and base_wd is None:
            raise RecipeError(f"{key_path}.decay_mult needs {wd_path} to be set (it multiplies it)")


@dataclass(frozen=True)
class CustomKey:
    """One `paramwise_cfg.custom_keys` entry: parameters whose name contains `key` get these multipliers."""

    key: str
    lr_mult: float = 1.0
    decay_mult: float | None = None


@dataclass(frozen=True)
class ParamwiseSpec:
    """`optimizer.paramwise_cfg`, checked: mmcv's multipliers (None: not set) and the custom keys in
    mmcv's matching order (alphabetical, then longest first, so the longest matching key wins)."""

    custom_keys: tuple[CustomKey, ...] = ()
    bias_lr_mult: float | None = None
    bias_decay_mult: float | None = None
    norm_decay_mult: float | None = None
    dwconv_decay_mult: float | None = None

    @classmethod
    def from_config(
        cls, paramwise_cfg: Mapping | None, base_wd: float | None, path: str = "optimizer.paramwise_cfg"
    ) -> ParamwiseSpec:
        """Check the table against mmcv's rules; `base_wd` is `optimizer.weight_decay` (decay mults need it)."""
        pw = {} if paramwise_cfg is None else paramwise_cfg
        if not isinstance(pw, Mapping):
            raise RecipeError(f"{path} = {pw!r}: expected a table, e.g. {{norm_decay_mult = 0.0}}")
        _check_paramwise_cfg(pw, base_wd, path)
        custom = pw.get("custom_keys", {})
        keys = tuple(CustomKey(key, **custom[key]) for key in sorted(sorted(custom), key=len, reverse=True))
        mults = {key: pw[key] for key in ("bias_lr_mult", *DECAY_MULT_KEYS) if key in pw}
        return cls(keys, **mults)


def _scaled(base: float | None, mult: float | None) -> float | None:
    return base if mult is None or base is None else base * mult


def _param_rule(
    pw: ParamwiseSpec,
    module: nn.Module,
    name: str,
    match_name: str,
    base_lr: float,
    base_wd: float | None,
) -> tuple[str, float, float | None]:
    """mmcv's per-tensor decision: (pattern, lr, weight_decay).

    A custom key found in the name wins outright. Otherwise `bias_lr_mult` scales the lr of a
    module's own `bias` unless the module is a norm layer, and at most one decay rule applies,
    checked in mmcv's order: norm layer (weight and bias), depthwise conv (weight and bias),
    then a plain `bias`.
    """
    for custom in pw.custom_keys:
        if custom.key in match_name:
            return f"custom_keys[{custom.key!r}]", base_lr * custom.lr_mult, _scaled(base_wd, custom.decay_mult)
    is_norm = isinstance(module, norm_types())
    is_dwconv = isinstance(module, nn.Conv2d) and module.in_channels == module.groups
    is_bias = name == "bias" and not is_norm
    tags: list[str] = []
    lr, wd = base_lr, base_wd
    decay_rule = "norm" if is_norm else "dwconv" if is_dwconv else "bias" if is_bias else None
    decay_mult = getattr(pw, f"{decay_rule}_decay_mult") if decay_rule else None
    if decay_rule and decay_mult is not None:
        wd = _scaled(base_wd, decay_mult)
        tags.append(decay_rule)
    if is_bias and pw.bias_lr_mult is not None:
        lr = base_lr * pw.bias_lr_mult
        if "bias" not in tags:
            tags.append("bias")
    return " + ".join(tags) or "default", lr, wd


def build_param_groups(
    model: nn.Module, base_lr: float, base_wd: float | None, paramwise: ParamwiseSpec
) -> tuple[list[dict], list[GroupInfo]]:
    """Apply mmcv's paramwise rules and merge tensors with the same (rule, lr, weight decay).

    Every parameter of the model, frozen or not, lands in exactly one group; groups keep the order
    in which their first tensor appears in `model.named_modules()`. `weight_decay` is left out of
    the groups when `base_wd` is None, so the optimizer's default applies (as in mmcv).
    """
    seen: set[int] = set()
    merged: dict[tuple[str, float, float | None], list[nn.Parameter]] = {}
    for module_name, module in model.named_modules():
        for name, param in module.named_parameters(recurse=False):
            if id(param) in seen:
                continue
            seen.add(id(param))
            # mmcv matches custom keys against f"{prefix}.{name}", i.e. ".weight" at the top level
            rule = _param_rule(paramwise, module, name, f"{module_name}.{name}", base_lr, base_wd)
            merged.setdefault(rule, []).append(param)

    groups: list[dict] = []
    infos: list[GroupInfo] = []
    for (pattern, lr, wd), params in merged.items():
        group: dict[str, Any] = {"params": params, "lr": lr}
        if wd is not None:
            group["weight_decay"] = wd
        groups.append(group)
        infos.append(GroupInfo(pattern, len(params), sum(p.numel() for p in params), lr, wd))
    return groups, infos


def _optimizer_classes(module: Any) -> dict[str, type[torch.optim.Optimizer]]:
    """Optimizer classes a module exports that take `params` first (wrappers like Lookahead do not)."""
    found = {}
    for name in dir(module):
        obj = getattr(module, name)
        if inspect.isclass(obj) and issubclass(obj, torch.optim.Optimizer) and obj is not torch.optim.Optimizer:
            arguments = list(inspect.signature(obj.__init__).parameters)
            if arguments[1:2] == ["params"]:
                found[name] = obj
    return found


@functools.cache
def _torch_optimizers() -> dict[str, type[torch.optim.Optimizer]]:
    return _optimizer_classes(torch.optim)


@functools.cache
def _timm_optimizers() -> dict[str, type[torch.optim.Optimizer]]:
    """timm.optim's classes; importing timm takes seconds, so only a name torch.optim lacks looks here."""
    import timm.optim

    return _optimizer_classes(timm.optim)


def optimizer_registry() -> dict[str, type[torch.optim.Optimizer]]:
    """Name -> class: torch.optim's names win; "timm.<Name>" reaches every timm.optim class."""
    torch_classes, timm_classes = _torch_optimizers(), _timm_optimizers()
    timm_extra = {name: cls for name, cls in timm_classes.items() if name not in torch_classes}
    return {**torch_classes, **timm_extra, **{f"timm.{name}": cls for name, cls in timm_classes.items()}}


def resolve_optimizer(name: object, path: str = "optimizer.type") -> type[torch.optim.Optimizer]:
    """Look a recipe's optimizer name up case-sensitively; suggest the closest name when it misses."""
    torch_classes = _torch_optimizers()
    if isinstance(name, str) and name in torch_classes:
        return torch_classes[name]
    registry = optimizer_registry()
    if isinstance(name, str) and name in registry:
        return registry[name]
    timm_extra = sorted(n for n in _timm_optimizers() if n not in torch_classes)
    text = str(name)
    same_case = [n for n in registry if n.lower() == text.lower()]
    hint = f' (did you mean "{same_case[0]}"?)' if same_case else did_you_mean(text, registry)
    raise RecipeError(
        f"{path} = {name!r} is not a known optimizer{hint}; torch.optim: {', '.join(sorted(torch_classes))}; "
        f'timm.optim: {", ".join(timm_extra)} ("timm.<Name>" picks timm\'s class where torch has the name too)'
    )


def _to_tuples(value: Any) -> Any:
    """TOML has arrays only; torch optimizers want tuples (betas, etas, step_sizes)."""
    return tuple(_to_tuples(v) for v in value) if isinstance(value, list) else value


def _check_arguments(cls: type, kwargs: Mapping[str, Any], path: str) -> None:
    variadic = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    params = list(inspect.signature(cls).parameters.values())[1:]  # params
    accepted = [p.name for p in params if p.kind not in variadic]
    for key in kwargs:
        if key not in accepted:
            raise RecipeError(
                f"unknown key '{path}.{key}': {cls.__name__} has no argument {key!r}{did_you_mean(key, accepted)}; "
                f"{cls.__name__} accepts: {', '.join(accepted)}"
            )


def _check_tuples(cls: type, kwargs: Mapping[str, Any], path: str) -> None:
    """Arguments whose default is a tuple of numbers (Adam's `betas`, Rprop's `etas`) take a list
    of as many numbers: the constructors index into them unchecked (`betas = [0.9]`)."""
    for param in list(inspect.signature(cls).parameters.values())[1:]:
        default, value = param.default, kwargs.get(param.name)
        if value is None or not isinstance(default, tuple) or not all(is_number(v) for v in default):
            continue
        if not (isinstance(value, tuple) and len(value) == len(default) and all(is_number(v) for v in value)):
            shown = list(value) if isinstance(value, tuple) else value
            raise RecipeError(
                f"{path}.{param.name} = {shown!r}: {cls.__name__} takes a list of {len(default)} numbers, "
                f"e.g. {param.name} = {list(default)!r}"
            )


def _rejected(cls: type, path: str, error: Exception) -> RecipeError:
    return RecipeError(f"{path}: {cls.__name__} rejected the settings: {error}")


def _class_settings(cls: type[torch.optim.Optimizer], kwargs: Mapping[str, Any], path: str) -> dict[str, Any]:
    """The settings as the class resolves them, its own defaults filled in (Adam's betas, SGD's
    momentum = 0), from its constructor run over no parameters: it checks the values (a negative lr)
    before any model exists.

    torch wraps `Optimizer.add_param_group` so that torch.compile skips it, and that wrapper imports
    torch._dynamo (about a second) on its first call; here the constructor calls the same method
    unwrapped (same checks), so checking a recipe costs no more than importing torch."""
    optimizer = cls.__new__(cls)
    if cls.add_param_group is torch.optim.Optimizer.add_param_group:
        unwrapped = getattr(cls.add_param_group, "__wrapped__", cls.add_param_group)
        optimizer.add_param_group = types.MethodType(unwrapped, optimizer)  # type: ignore[method-assign]
    try:
        cls.__init__(optimizer, [{"params": []}], **kwargs)
    except (ValueError, TypeError, IndexError) as e:
        raise _rejected(cls, path, e) from e
    return dict(optimizer.defaults)


@dataclass(frozen=True)
class OptimizerSpec:
    """`[optimizer]` parsed and checked at load; `build_optimizer` builds it on the model."""

    cls: type[torch.optim.Optimizer]
    kwargs: Mapping[str, Any]  # the constructor's arguments besides the params, lr included
    paramwise: ParamwiseSpec
    settings: Mapping[str, Any]  # `kwargs` with the class's own defaults filled in

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], path: str = "optimizer") -> OptimizerSpec:
        if not isinstance(cfg, Mapping):
            raise RecipeError(f"{path} must be a table with at least type and lr")
        kwargs = {key: _to_tuples(value) for key, value in cfg.items()}
        if "type" not in kwargs:
            raise RecipeError(f'{path}.type is missing, e.g. type = "SGD"')
        optimizer_cls = resolve_optimizer(kwargs.pop("type"), f"{path}.type")
        check_choice(
            kwargs.pop("constructor", "DefaultOptimizerConstructor"),
            ("DefaultOptimizerConstructor",),
            f"{path}.constructor",
        )
        paramwise_cfg = kwargs.pop("paramwise_cfg", None)
        _check_arguments(optimizer_cls, kwargs, path)
        _check_tuples(optimizer_cls, kwargs, path)
        if "lr" not in kwargs:
            raise RecipeError(f"{path}.lr is missing, e.g. lr = 0.01")
        finite_number(kwargs["lr"], f"{path}.lr")
        base_wd = kwargs.get("weight_decay")
        if base_wd is not None:
            finite_number(base_wd, f"{path}.weight_decay")
        paramwise = ParamwiseSpec.from_config(paramwise_cfg, base_wd, f"{path}.paramwise_cfg")
        return cls(optimizer_cls, kwargs, paramwise, _class_settings(optimizer_cls, kwargs, path))

    @property
    def lr(self) -> float:
        return self.kwargs["lr"]

    @property
    def weight_decay(self) -> float | None:
        return self.kwargs.get("weight_decay")

    @property
    def base_momentum(self) -> float | None:
        """The momentum a momentum schedule scales: SGD-style `momentum` or Adam-style `betas[0]`."""
        if "momentum" in self.settings:
            return float(self.settings["momentum"])
        if "betas" in self.settings:
            return float(self.settings["betas"][0])
        return None


def _unwrap(model: nn.Module) -> nn.Module:
    """Match parameter names without the `module.` prefix of a (D)DP wrapper, as mmcv does."""
    wrappers = (nn.DataParallel, nn.parallel.DistributedDataParallel)
    return model.module if isinstance(model, wrappers) else model


def build_optimizer(
    model: nn.Module, spec: OptimizerSpec, lr: float | None = None
) -> tuple[torch.optim.Optimizer, list[GroupInfo]]:
    """The optimizer `spec` describes on `model`'s parameters, with one GroupInfo per param group;
    `lr` replaces `spec.lr` (the auto-scaled lr).

    The GroupInfos carry the lr and weight decay the optimizer really uses, defaults included.
    """
    kwargs = dict(spec.kwargs) if lr is None else {**spec.kwargs, "lr": lr}
    groups, infos = build_param_groups(_unwrap(model), kwargs["lr"], spec.weight_decay, spec.paramwise)
    try:
        optimizer = spec.cls(groups, **kwargs)
    except (ValueError, TypeError) as e:
        raise _rejected(spec.cls, "optimizer", e) from e
    infos = [
        replace(info, lr=group["lr"], weight_decay=group.get("weight_decay"))
        for info, group in zip(infos, optimizer.param_groups)
    ]
    return optimizer, infos


def format_param_group_table(infos: list[GroupInfo]) -> str:
    """A plain-text table of the param groups, so a wrong paramwise_cfg shows up in the log."""

    def number(value: float | None) -> str:
        return "-" if value is None else f"{value:.6g}"

    header = ("pattern", "#tensors", "#params", "lr", "weight_decay")
    rows = [(i.pattern, str(i.num_tensors), f"{i.num_params:,}", number(i.lr), number(i.weight_decay)) for i in infos]
    rows.append(("total", str(sum(i.num_tensors for i in infos)), f"{sum(i.num_params for i in infos):,}", "", ""))
    widths = [max(len(row[c]) for row in (header, *rows)) for c in range(len(header))]

    def line(row: tuple[str, ...]) -> str:
        cells = [row[0].ljust(widths[0]), *(cell.rjust(width) for cell, width in zip(row[1:], widths[1:]))]
        return "  ".join(cells).rstrip()

    return "\n".join(line(row) for row in (header, *rows))


def scale_lr(lr: float, *, num_processes: int, batch_size: int, accumulation: int, base_batch_size: int) -> float:
    """mmcv's auto_scale_lr (linear scaling rule): the lr was tuned for `base_batch_size` images per step."""
    if base_batch_size <= 0:
        raise RecipeError(f"auto_scale_lr.base_batch_size = {base_batch_size}: expected a positive number")
    return lr * (num_processes * batch_size * accumulation) / base_batch_size


def auto_scaled_lr(recipe: Recipe, num_processes: int, batch_size: int) -> float:
    """The recipe's lr for `num_processes` processes at this per-process batch size: `optimizer.lr`
    itself unless `[auto_scale_lr]` is enabled (the one place the rule is applied to a recipe)."""
    lr = float(recipe.optimizer["lr"])
    scale = recipe.auto_scale_lr
    if not scale.enable:
        return lr
    return scale_lr(
        lr,
        num_processes=num_processes,
        batch_size=batch_size,
        accumulation=recipe.accelerate.gradient_accumulation_steps,
        base_batch_size=scale.base_batch_size,
    )


def build_recipe_optimizer(
    model: nn.Module, recipe: Recipe, spec: OptimizerSpec, num_processes: int
) -> torch.optim.Optimizer:
    """The recipe's optimizer (`spec`, its parsed `[optimizer]`) for a run of `num_processes`
    processes (auto_scale_lr applied), with the scaled lr and the param-group table in the log."""
    lr = spec.lr
    if recipe.auto_scale_lr.enable:
        lr = auto_scaled_lr(recipe, num_processes, recipe.data.batch_size)
        logger.info(
            "auto_scale_lr: lr %.6g -> %.6g (%d processes x batch %d x accumulation %d / base %d)",
            spec.lr, lr, num_processes, recipe.data.batch_size,
            recipe.accelerate.gradient_accumulation_steps, recipe.auto_scale_lr.base_batch_size,
        )  # fmt: skip
    optimizer, infos = build_optimizer(model, spec, lr)
    logger.info("optimizer %s param groups:\n%s", type(optimizer).__name__, format_param_group_table(infos))
    return optimizer
