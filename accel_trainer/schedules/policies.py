"""The mmcv 1.x lr / momentum updater policies as pure functions of the progress counters.

Each policy reads its recipe table (a `recipe.checks.Table`) with mmcv's keys and defaults and
computes the regular value (before warmup) of one param group from its base value and a
`Progress`; `apply.py` adds mmcv's warmup and applies the values to an optimizer.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import RecipeError
from ..recipe.checks import REQUIRED, Table, is_int, is_number, join_path


@dataclass(frozen=True)
class Progress:
    """The counters a schedule value depends on."""

    epoch: int  # 0-based epoch currently being trained
    iter: int  # 0-based global iteration (= optimizer step) about to run
    iters_per_epoch: int  # len(train loader) in optimizer steps
    max_epochs: int  # for iteration-based runs: ceil(max_iters / iters_per_epoch)
    max_iters: int  # total optimizer steps of the run


def annealing_cos(start: float, end: float, factor: float, weight: float = 1.0) -> float:
    """Cosine from `weight * start + (1 - weight) * end` (factor 0) to `end` (factor 1)."""
    return end + 0.5 * weight * (start - end) * (math.cos(math.pi * factor) + 1)


def annealing_linear(start: float, end: float, factor: float) -> float:
    """Straight line from `start` (factor 0) to `end` (factor 1)."""
    return start + (end - start) * factor


ANNEALING: dict[str, Callable[[float, float, float], float]] = {"cos": annealing_cos, "linear": annealing_linear}


def _per_group(value: float | list[float], groups: int, where: str) -> list[float]:
    """Expand a per-group argument the way mmcv's format_param does."""
    if isinstance(value, float):
        return [value] * groups
    if len(value) != groups:
        raise RecipeError(f"{where} = {value!r}: expected one value per param group ({groups}), got {len(value)}")
    return value


# ---------------------------------------------------------------------------------- policies


class Policy:
    """The regular value (before warmup) of one mmcv updater, as a function of base value and progress.

    `kind` is "lr" or "momentum": the two updater families share policies but not key names or defaults.
    """

    iteration_only = False  # mmcv asserts by_epoch=False for this updater

    @classmethod
    def keys(cls, kind: str) -> tuple[str, ...]:
        return ()

    def __init__(self, t: Table, kind: str, by_epoch: bool) -> None:
        self.path, self.by_epoch = t.path, by_epoch

    def initial_values(self, current: list[float]) -> list[float]:
        """What `initial_<kind>` is seeded with when a group has none yet."""
        return current

    def values(self, bases: list[float], p: Progress) -> list[float]:
        return [self.value(base, p) for base in bases]

    def value(self, base: float, p: Progress) -> float:
        raise NotImplementedError

    def progress(self, p: Progress) -> tuple[int, int]:
        return (p.epoch, p.max_epochs) if self.by_epoch else (p.iter, p.max_iters)


class _Fixed(Policy):
    def value(self, base: float, p: Progress) -> float:
        return base


class _Step(Policy):
    """Multiply by gamma at every `step` (int: interval; list: milestones); optional absolute floor."""

    @classmethod
    def keys(cls, kind: str) -> tuple[str, ...]:
        return ("step", "gamma", f"min_{kind}")

    def __init__(self, t: Table, kind: str, by_epoch: bool) -> None:
        super().__init__(t, kind, by_epoch)
        expected = "a positive integer (decay interval) or a list of positive integers (milestones)"
        step = t.get("step", REQUIRED, expected)
        positive_ints = isinstance(step, (list, tuple)) and all(is_int(s) and s > 0 for s in step)
        if not (positive_ints or (is_int(step) and step > 0)):
            raise t.fail("step", expected)
        self.step: int | list[int] = list(step) if isinstance(step, (list, tuple)) else step
        self.gamma = t.number("gamma", 0.1 if kind == "lr" else 0.5)
        self.floor = t.number(f"min_{kind}", None)

    def value(self, base: float, p: Progress) -> float:
        progress, _ = self.progress(p)
        if isinstance(self.step, int):
            exp = progress // self.step
        else:
            exp = next((i for i, s in enumerate(self.step) if progress < s), len(self.step))
        value = base * self.gamma**exp
        return value if self.floor is None else max(value, self.floor)


class _Exp(Policy):
    @classmethod
    def keys(cls, kind: str) -> tuple[str, ...]:
        return ("gamma",)

    def __init__(self, t: Table, kind: str, by_epoch: bool) -> None:
        super().__init__(t, kind, by_epoch)
        self.gamma = t.number("gamma")

    def value(self, base: float, p: Progress) -> float:
        progress, _ = self.progress(p)
        return base * self.gamma**progress


class _Poly(Policy):
    @classmethod
    def keys(cls, kind: str) -> tuple[str, ...]:
        return ("power", "min_lr")

    def __init__(self, t: Table, kind: str, by_epoch: bool) -> None:
        super().__init__(t, kind, by_epoch)
        self.power = t.number("power", 1.0)
        self.floor = t.number("min_lr", 0.0)

    def value(self, base: float, p: Progress) -> float:
        progress, total = self.progress(p)
        coeff = (1 - progress / total) ** self.power
        return (base - self.floor) * coeff + self.floor


class _Inv(Policy):
    @classmethod
    def keys(cls, kind: str) -> tuple[str, ...]:
        return ("gamma", "power")

    def __init__(self, t: Table, kind: str, by_epoch: bool) -> None:
        super().__init__(t, kind, by_epoch)
        self.gamma = t.number("gamma")
        self.power = t.number("power", 1.0)

    def value(self, base: float, p: Progress) -> float:
        progress, _ = self.progress(p)
        return base * (1 + self.gamma * progress) ** (-self.power)


class _ToTarget(Policy):
    """Policies that end at `min_<kind>` (same for every group) or `min_<kind>_ratio` × the group's base."""

    @classmethod
    def keys(cls, kind: str) -> tuple[str, ...]:
        return (f"min_{kind}", f"min_{kind}_ratio")

    def __init__(self, t: Table, kind: str, by_epoch: bool) -> None:
        super().__init__(t, kind, by_epoch)
        self.floor = t.number(f"min_{kind}", None)
        self.ratio = t.number(f"min_{kind}_ratio", None)
        if (self.floor is None) == (self.ratio is None):
            absolute, ratio = t.where(f"min_{kind}"), t.where(f"min_{kind}_ratio")
            got = "both are set" if self.floor is not None else "neither is set"
            raise RecipeError(f"{absolute} / {ratio}: {got}; {t.context} expects exactly one of them")

    def target(self, base: float) -> float:
        return base * self.ratio if self.ratio is not None else self.floor


class _CosineAnnealing(_ToTarget):
    def value(self, base: float, p: Progress) -> float:
        progress, total = self.progress(p)
        return annealing_cos(base, self.target(base), progress / total)


class _LinearAnnealing(_ToTarget):
    def value(self, base: float, p: Progress) -> float:
        progress, total = self.progress(p)
        return annealing_linear(base, self.target(base), progress / total)


class _FlatCosineAnnealing(_ToTarget):
    """Flat at the base value until `start_percent` of the run, then cosine to the target."""

    @classmethod
    def keys(cls, kind: str) -> tuple[str, ...]:
        return ("start_percent", *super().keys(kind))

    def __init__(self, t: Table, kind: str, by_epoch: bool) -> None:
        super().__init__(t, kind, by_epoch)
        self.start_percent = t.number("start_percent", 0.75, lambda v: 0 <= v <= 1, "a number in [0, 1]")

    def value(self, base: float, p: Progress) -> float:
        progress, total = self.progress(p)
        start = round(total * self.start_percent)
        if progress < start:
            return base
        return annealing_cos(base, self.target(base), (progress - start) / (total - start))


class _CosineRestart(_ToTarget):
    """Cosine cycles of the given lengths, each restarting at `restart_weights[i]` of the span."""

    @classmethod
    def keys(cls, kind: str) -> tuple[str, ...]:
        return ("periods", "restart_weights", *super().keys(kind))

    def __init__(self, t: Table, kind: str, by_epoch: bool) -> None:
        super().__init__(t, kind, by_epoch)
        periods = t.get("periods", REQUIRED, "a list of positive integers")
        if not isinstance(periods, (list, tuple)) or not periods or not all(is_int(v) and v > 0 for v in periods):
            raise t.fail("periods", "a non-empty list of positive integers")
        self.periods = list(periods)
        self.weights = t.numbers("restart_weights", [1])
        if len(self.weights) != len(self.periods):
            raise t.fail("restart_weights", f"one weight per period ({len(self.periods)} numbers)")
        self.ends = [sum(self.periods[: i + 1]) for i in range(len(self.periods))]

    def value(self, base: float, p: Progress) -> float:
        progress, _ = self.progress(p)
        idx = next((i for i, end in enumerate(self.ends) if progress < end), None)
        if idx is None:
            unit = "epochs" if self.by_epoch else "iterations"
            raise RecipeError(
                f"{join_path(self.path, 'periods')} = {self.periods!r} covers {self.ends[-1]} {unit}, "
                f"but the run reaches {unit[:-1]} {progress}; expected periods summing to the whole run"
            )
        start = self.ends[idx - 1] if idx else 0
        alpha = min((progress - start) / self.periods[idx], 1)
        return annealing_cos(base, self.target(base), alpha, self.weights[idx])


class _Cyclic(Policy):
    """`cyclic_times` cycles over the run; each goes base → base·ratio[0] → base·ratio[1]."""

    iteration_only = True

    @classmethod
    def keys(cls, kind: str) -> tuple[str, ...]:
        return ("target_ratio", "cyclic_times", "step_ratio_up", "anneal_strategy", "gamma")

    def __init__(self, t: Table, kind: str, by_epoch: bool) -> None:
        super().__init__(t, kind, by_epoch)
        default = (10, 1e-4) if kind == "lr" else (0.85 / 0.95, 1.0)
        expected = "a number r (meaning [r, r / 1e5]) or a list of one or two numbers"
        ratio = t.get("target_ratio", default, expected)
        if is_number(ratio):
            ratio = [ratio]
        if not isinstance(ratio, (list, tuple)) or len(ratio) not in (1, 2) or not all(is_number(r) for r in ratio):
            raise t.fail("target_ratio", expected)
        self.ratio = (ratio[0], ratio[0] / 1e5) if len(ratio) == 1 else tuple(ratio)
        self.cycles = t.integer("cyclic_times", 1, lambda v: v > 0, "a positive integer")
        self.up = t.number("step_ratio_up", 0.4, lambda v: 0 <= v < 1, "a number in [0, 1)")
        self.anneal = ANNEALING[t.choice("anneal_strategy", list(ANNEALING), "cos")]
        if kind == "lr":
            self.gamma = t.number("gamma", 1.0, lambda v: 0 < v <= 1, "a number in (0, 1]")
        else:
            self.gamma = t.number("gamma", 1.0)

    def value(self, base: float, p: Progress) -> float:
        per_cycle = p.max_iters // self.cycles
        if per_cycle == 0:
            raise RecipeError(
                f"{join_path(self.path, 'cyclic_times')} = {self.cycles}: expected at most the run's "
                f"{p.max_iters} iterations"
            )
        up = int(self.up * per_cycle)
        at, cycle = p.iter % per_cycle, p.iter // per_cycle
        peak = 1 - self.gamma**cycle + self.ratio[0] * self.gamma**cycle
        if at < up:
            return self.anneal(base * 1, base * peak, at / up)
        return self.anneal(base * peak, base * self.ratio[1], (at - up) / (per_cycle - up))


def _phased(anneal: Callable[[float, float, float], float], it: int, phases: list[tuple[float, float, float]]) -> float:
    """Value at `it` of consecutive (end_iter, start_value, end_value) phases; the last one extends."""
    start = 0.0
    for end, first, last in phases[:-1]:
        if it <= end:
            return anneal(first, last, (it - start) / (end - start))
        start = end
    end, first, last = phases[-1]
    return anneal(first, last, (it - start) / (end - start))


class _OneCycleBase(Policy):
    iteration_only = True

    def __init__(self, t: Table, kind: str, by_epoch: bool) -> None:
        super().__init__(t, kind, by_epoch)
        self.pct_start = t.number("pct_start", 0.3, lambda v: 0 <= v <= 1, "a number in [0, 1]")
        self.anneal = ANNEALING[t.choice("anneal_strategy", list(ANNEALING), "cos")]
        self.three_phase = t.boolean("three_phase", False)

    def phase_ends(self, total: int, key: str) -> list[float]:
        """mmcv's phase boundaries; a zero-length first phase would make it divide by zero."""
        if self.pct_start * total == 1:
            raise RecipeError(
                f"{join_path(self.path, 'pct_start')} = {self.pct_start!r} with {key} = {total} gives an "
                "empty first phase; expected pct_start * steps != 1"
            )
        first = float(self.pct_start * total) - 1
        if self.three_phase:
            return [first, float(2 * self.pct_start * total) - 2, total - 1]
        return [first, total - 1]


class _OneCycle(_OneCycleBase):
    """lr from max_lr/div_factor up to max_lr, then down to max_lr/div_factor/final_div_factor."""

    @classmethod
    def keys(cls, kind: str) -> tuple[str, ...]:
        return (
            "max_lr",
            "total_steps",
            "pct_start",
            "anneal_strategy",
            "div_factor",
            "final_div_factor",
            "three_phase",
        )

    def __init__(self, t: Table, kind: str, by_epoch: bool) -> None:
        super().__init__(t, kind, by_epoch)
        self.max_lr = t.number_or_numbers("max_lr")
        self.total_steps = t.integer("total_steps", None, lambda v: v > 0, "a positive integer")
        self.div = t.number("div_factor", 25.0)
        self.final_div = t.number("final_div_factor", 1e4)

    def initial_values(self, current: list[float]) -> list[float]:
        return [m / self.div for m in _per_group(self.max_lr, len(current), join_path(self.path, "max_lr"))]

    def values(self, bases: list[float], p: Progress) -> list[float]:
        total = p.max_iters if self.total_steps is None else self.total_steps
        if total < p.max_iters:
            raise RecipeError(
                f"{join_path(self.path, 'total_steps')} = {total}: expected at least the run's {p.max_iters} iterations"
            )
        ends = self.phase_ends(total, "total_steps")
        if self.three_phase:
            factors = [(1, self.div), (self.div, 1), (1, 1 / self.final_div)]
        else:
            factors = [(1, self.div), (self.div, 1 / self.final_div)]
        out = []
        for base in self.initial_values(bases):
            phases = [(end, base * a, base * b) for end, (a, b) in zip(ends, factors)]
            out.append(_phased(self.anneal, p.iter, phases))
        return out


class _OneCycleMomentum(_OneCycleBase):
    """Momentum from max_momentum down to base_momentum while lr rises, then back (mirror of OneCycle lr)."""

    @classmethod
    def keys(cls, kind: str) -> tuple[str, ...]:
        return ("base_momentum", "max_momentum", "pct_start", "anneal_strategy", "three_phase")

    def __init__(self, t: Table, kind: str, by_epoch: bool) -> None:
        super().__init__(t, kind, by_epoch)
        self.low = t.number_or_numbers("base_momentum", 0.85)
        self.high = t.number_or_numbers("max_momentum", 0.95)

    def values(self, bases: list[float], p: Progress) -> list[float]:
        ends = self.phase_ends(p.max_iters, "max_iters")
        lows = _per_group(self.low, len(bases), join_path(self.path, "base_momentum"))
        highs = _per_group(self.high, len(bases), join_path(self.path, "max_momentum"))
        out = []
        for low, high in zip(lows, highs):
            if self.three_phase:
                phases = [(ends[0], high, low), (ends[1], low, high), (ends[2], high, high)]
            else:
                phases = [(ends[0], high, low), (ends[1], low, high)]
            out.append(_phased(self.anneal, p.iter, phases))
        return out


LR_POLICIES: dict[str, type[Policy]] = {
    "Fixed": _Fixed,
    "Step": _Step,
    "Exp": _Exp,
    "Poly": _Poly,
    "Inv": _Inv,
    "CosineAnnealing": _CosineAnnealing,
    "FlatCosineAnnealing": _FlatCosineAnnealing,
    "CosineRestart": _CosineRestart,
    "Cyclic": _Cyclic,
    "OneCycle": _OneCycle,
    "LinearAnnealing": _LinearAnnealing,
}

MOMENTUM_POLICIES: dict[str, type[Policy]] = {
    "Cyclic": _Cyclic,
    "CosineAnnealing": _CosineAnnealing,
    "Step": _Step,
    "OneCycle": _OneCycleMomentum,
    "LinearAnnealing": _LinearAnnealing,
}
