"""Learning-rate and momentum schedules with mmcv 1.7.2 updater-hook semantics, in closed form.

mmcv's LrUpdaterHook / MomentumUpdaterHook keep run state (base values, the epoch's regular
value, phase tables) and mutate the optimizer from hook callbacks. Here every value is a pure
function of the progress counters (`Progress`), so resuming needs only the counters and the same
code previews a whole run (`schedule_rows`). The recipe tables keep mmcv's keys and defaults:
`policy` picks the updater (an all-lowercase name is title-cased first, as mmcv's runner does)
and the other keys are that updater's arguments.

What the closed form reproduces of mmcv's stepping:
- by_epoch=True: the regular value comes from the epoch (mmcv sets it in before_train_epoch), the
  warmup from the global iteration; from iteration `warmup_iters` on the regular value is in force.
- Warmup multiplies the regular lr (divides the regular momentum); it is not a prefix.
- Every param group is scheduled from its own `initial_lr` / `initial_momentum`; absolute floors
  (min_lr, min_momentum) are the same for every group.
- OneCycle lr ignores the groups' lr: its base is max_lr / div_factor per group. OneCycle momentum
  ignores the groups' momentum: it runs between base_momentum and max_momentum per group.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import RecipeError
from ..recipe.checks import Table, check_choice, check_keys
from .policies import LR_POLICIES, MOMENTUM_POLICIES, Policy, Progress

__all__ = ["LrSchedule", "MomentumSchedule", "Progress", "ScheduleSpec", "apply_schedules"]

WARMUPS = ("constant", "linear", "exp")


@dataclass(frozen=True)
class _Warmup:
    kind: str
    iters: int
    ratio: float
    by_epoch: bool

    def factor(self, p: Progress) -> float | None:
        """The warmup multiplier at p.iter (mmcv's arithmetic), or None once warmup is over."""
        total = self.iters * p.iters_per_epoch if self.by_epoch else self.iters
        if p.iter >= total:
            return None
        if self.kind == "constant":
            return self.ratio
        if self.kind == "linear":
            return 1 - (1 - p.iter / total) * (1 - self.ratio)
        return self.ratio ** (1 - p.iter / total)


def _display_name(name: str) -> str:
    """The spelling recipes usually use: lowercase where mmcv would title-case it back."""
    return name.lower() if name.lower().title() == name else name


class _Schedule:
    """A policy plus mmcv's warmup; the lr and momentum schedules differ in keys and warmup direction."""

    kind = ""
    policies: dict[str, type[Policy]] = {}
    common_keys: tuple[str, ...] = ()
    warmup_ratio_default = 0.0

    def __init__(self, policy: Policy, warmup: _Warmup | None) -> None:
        self.policy, self.warmup = policy, warmup

    @property
    def by_epoch(self) -> bool:
        return self.policy.by_epoch

    @classmethod
    def _parse(cls, cfg: Mapping, path: str, by_epoch_default: bool) -> tuple[Policy, _Warmup | None]:
        if not isinstance(cfg, Mapping):
            raise RecipeError(f"{path} = {cfg!r}: expected a table with a `policy` key")
        names = [_display_name(n) for n in cls.policies]
        if "policy" not in cfg:
            raise RecipeError(f"{path}.policy is missing: expected one of {', '.join(names)}")
        name = cfg["policy"]
        if not isinstance(name, str):
            raise RecipeError(f"{path}.policy = {name!r}: expected a policy name, one of {', '.join(names)}")
        canonical = name.title() if name == name.lower() else name
        if canonical not in cls.policies:
            check_choice(name, names, f"{path}.policy")
        policy_cls = cls.policies[canonical]
        check_keys(cfg, ("policy", *cls.common_keys, *policy_cls.keys(cls.kind)), path)
        t = Table(cfg, path, f"policy {name!r}")
        by_epoch = t.boolean("by_epoch", False if policy_cls.iteration_only else by_epoch_default)
        if by_epoch and policy_cls.iteration_only:
            raise RecipeError(f"{t.where('by_epoch')} = true: expected false; policy {name!r} only steps per iteration")
        warmup = cls._parse_warmup(t)
        return policy_cls(t, cls.kind, by_epoch), warmup

    @classmethod
    def _parse_warmup(cls, t: Table) -> _Warmup | None:
        kind = t.choice("warmup", WARMUPS, None)
        iters = t.integer("warmup_iters", 0, lambda v: v >= 0, "a non-negative integer")
        ratio = t.number("warmup_ratio", cls.warmup_ratio_default)
        by_epoch = t.boolean("warmup_by_epoch", False)  # check_keys has rejected it for momentum
        if kind is None:
            return None
        if iters <= 0:
            raise t.fail("warmup_iters", f"a positive integer when warmup = {kind!r}")
        if not 0 < ratio <= 1:
            raise t.fail("warmup_ratio", "a number in (0, 1]")
        return _Warmup(kind, iters, ratio, by_epoch)

    def initial_values(self, current: list[float]) -> list[float]:
        """What each group's `initial_<kind>` is seeded with (mmcv's before_run)."""
        return self.policy.initial_values(current)

    def regular_values(self, bases: list[float], p: Progress) -> tuple[list[float], float | None]:
        factor = self.warmup.factor(p) if self.warmup is not None else None
        return self.policy.values(bases, p), factor


class LrSchedule(_Schedule):
    """mmcv's LrUpdaterHook family, from a `[lr_config]` table."""

    kind = "lr"
    policies = LR_POLICIES
    common_keys = ("by_epoch", "warmup", "warmup_iters", "warmup_ratio", "warmup_by_epoch")
    warmup_ratio_default = 0.1

    @classmethod
    def from_config(cls, cfg: Mapping | None, path: str = "lr_config", *, iter_based: bool = False) -> LrSchedule:
        """Validate and build. None or {} keeps every group at its initial lr.

        `iter_based`: the run uses IterBasedRunner, whose mmcv registration defaults by_epoch to False.
        """
        if not cfg:
            return cls(LR_POLICIES["Fixed"](Table({}, path, ""), "lr", False), None)
        return cls(*cls._parse(cfg, path, by_epoch_default=not iter_based))

    def values(self, base_lrs: list[float], p: Progress) -> list[float]:
        """The lr of each group during iteration p.iter, from the groups' initial lrs."""
        regular, factor = self.regular_values(base_lrs, p)
        return regular if factor is None else [lr * factor for lr in regular]


class MomentumSchedule(_Schedule):
    """mmcv's MomentumUpdaterHook family, from a `[momentum_config]` table (momentum or Adam's beta1)."""

    kind = "momentum"
    policies = MOMENTUM_POLICIES
    common_keys = ("by_epoch", "warmup", "warmup_iters", "warmup_ratio")
    warmup_ratio_default = 0.9

    @classmethod
    def from_config(cls, cfg: Mapping | None, path: str = "momentum_config") -> MomentumSchedule | None:
        """Validate and build; None or {} means momentum is left alone."""
        if not cfg:
            return None
        return cls(*cls._parse(cfg, path, by_epoch_default=True))

    def values(self, base_momentums: list[float], p: Progress) -> list[float]:
        """The momentum of each group during iteration p.iter; warmup divides (mmcv's inverted warmup)."""
        regular, factor = self.regular_values(base_momentums, p)
        return regular if factor is None else [m / factor for m in regular]


def apply_schedules(optimizer: Any, lr: LrSchedule, momentum: MomentumSchedule | None, p: Progress) -> None:
    """Set every param group's lr (and momentum, or betas[0] for Adam-family) for iteration p.iter.

    Base values come from group['initial_lr'] / group['initial_momentum'], seeded once with setdefault
    as mmcv's before_run does, so they travel with the optimizer state across resumes.
    """
    groups = optimizer.param_groups
    for group, seed in zip(groups, lr.initial_values([g["lr"] for g in groups])):
        group.setdefault("initial_lr", seed)
    for group, value in zip(groups, lr.values([g["initial_lr"] for g in groups], p)):
        group["lr"] = value
    if momentum is None:
        return
    for i, group in enumerate(groups):
        if "momentum" in group:
            group.setdefault("initial_momentum", group["momentum"])
        elif "betas" in group:
            group.setdefault("initial_momentum", group["betas"][0])
        else:
            raise RecipeError(
                f"momentum_config is set but param group {i} has neither momentum nor betas; "
                "expected an optimizer with momentum (e.g. SGD momentum = 0.9) or betas (Adam family)"
            )
    for group, value in zip(groups, momentum.values([g["initial_momentum"] for g in groups], p)):
        if "momentum" in group:
            group["momentum"] = value
        else:
            group["betas"] = (value, *group["betas"][1:])


@dataclass(frozen=True)
class ScheduleSpec:
    """`[lr_config]` and `[momentum_config]`, parsed once when the recipe is loaded; the schedule
    hook and the `schedule` preview both run it."""

    lr: LrSchedule
    momentum: MomentumSchedule | None

    @classmethod
    def from_config(
        cls, lr_config: Mapping | None, momentum_config: Mapping | None, *, iter_based: bool = False
    ) -> ScheduleSpec:
        """Validate both tables (`iter_based`: see `LrSchedule.from_config`)."""
        return cls(
            LrSchedule.from_config(lr_config, iter_based=iter_based), MomentumSchedule.from_config(momentum_config)
        )


def rescale_initial_lr(param_groups: list[dict], old_batch_size: int, new_batch_size: int) -> None:
    """With auto_scale_lr, a stage with another batch size scales every group's base lr alike."""
    for group in param_groups:
        group["initial_lr"] = group.get("initial_lr", group["lr"]) * new_batch_size / old_batch_size
