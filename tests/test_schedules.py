"""lr / momentum schedules: mmcv 1.7.2 updater semantics at boundary iterations, validation, CSV and PNG."""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from accel_trainer.errors import RecipeError
from accel_trainer.plotting import plot_schedule_png
from accel_trainer.schedules import LrSchedule, MomentumSchedule, Progress, apply_schedules
from accel_trainer.schedules.preview import schedule_rows, write_schedule_csv

REPO_DOCS = Path(__file__).resolve().parents[1] / "docs" / "schedules"

BASES = [0.1, 0.01]  # two param groups: lr ratios must survive every ratio-based policy


def at(it: int, ipe: int, max_epochs: int, max_iters: int | None = None) -> Progress:
    """Progress of an epoch-based run (or an iteration run with max_iters) at global iteration `it`."""
    return Progress(it // ipe, it, ipe, max_epochs, max_epochs * ipe if max_iters is None else max_iters)


def lrs(cfg: dict | None, p: Progress, bases: list[float] = BASES) -> list[float]:
    return LrSchedule.from_config(cfg).values(bases, p)


def cos_mix(start: float, end: float, fraction: float) -> float:
    """The point `fraction` of the way along a half cosine from start to end."""
    return end + (start - end) * (1 + math.cos(math.pi * fraction)) / 2


def sgd(lrs_: Sequence[float] = BASES, momentums: Sequence[float] = (0.9, 0.8)) -> torch.optim.SGD:
    groups = [
        {"params": [torch.nn.Parameter(torch.zeros(1))], "lr": lr, "momentum": m} for lr, m in zip(lrs_, momentums)
    ]
    return torch.optim.SGD(groups, lr=lrs_[0])


def adamw(betas: Sequence[tuple[float, float]] = ((0.9, 0.999), (0.8, 0.99))) -> torch.optim.AdamW:
    groups = [{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": lr, "betas": b} for lr, b in zip(BASES, betas)]
    return torch.optim.AdamW(groups)


# ------------------------------------------------------------------------------- fixed and warmup


@pytest.mark.parametrize("cfg", [None, {}, {"policy": "fixed"}, {"policy": "Fixed", "by_epoch": False}])
def test_fixed_keeps_each_groups_initial_lr(cfg):
    for it in (0, 57, 119):
        assert lrs(cfg, at(it, 10, 12)) == BASES


def test_no_lr_config_means_no_warmup():
    assert LrSchedule.from_config(None).warmup is None


@pytest.mark.parametrize(
    "kind, it, factor",
    [
        ("constant", 0, 0.2),
        ("constant", 19, 0.2),
        ("constant", 20, 1.0),
        ("linear", 0, 0.2),
        ("linear", 10, 0.6),  # 1 - (1 - 10/20) * (1 - 0.2)
        ("linear", 19, 1 - (1 / 20) * 0.8),
        ("linear", 20, 1.0),
        ("exp", 0, 0.2),
        ("exp", 10, 0.2**0.5),
        ("exp", 20, 1.0),
    ],
)
def test_warmup_kinds_multiply_the_regular_lr(kind, it, factor):
    cfg = {"policy": "fixed", "by_epoch": False, "warmup": kind, "warmup_iters": 20, "warmup_ratio": 0.2}
    assert lrs(cfg, at(it, 7, 10)) == pytest.approx([0.1 * factor, 0.01 * factor], rel=1e-12)


def test_warmup_by_epoch_counts_epochs_but_ramps_per_iteration():
    cfg = {"policy": "fixed", "warmup": "linear", "warmup_iters": 2, "warmup_by_epoch": True, "warmup_ratio": 0.1}
    # 2 epochs of 10 iterations = 20 warmup iterations
    assert lrs(cfg, at(10, 10, 5)) == pytest.approx([0.1 * 0.55, 0.01 * 0.55], rel=1e-12)
    assert lrs(cfg, at(19, 10, 5)) == pytest.approx([0.1 * (1 - 0.9 / 20), 0.01 * (1 - 0.9 / 20)], rel=1e-12)
    assert lrs(cfg, at(20, 10, 5)) == BASES


def test_default_warmup_ratio_is_0_1():
    cfg = {"policy": "fixed", "warmup": "constant", "warmup_iters": 5}
    assert lrs(cfg, at(0, 10, 5)) == pytest.approx([0.01, 0.001], rel=1e-12)


# ------------------------------------------------------------------------------- seed recipes


SEED_A = {"policy": "step", "warmup": "linear", "warmup_iters": 500, "warmup_ratio": 0.001, "step": [8, 11]}


@pytest.mark.parametrize(
    "it, expected",
    [
        (0, 0.1 * 0.001),
        (250, 0.1 * (1 - 0.5 * 0.999)),
        (499, 0.1 * (1 - 0.999 / 500)),
        (500, 0.1),  # warmup end: the regular lr
        (799, 0.1),
        (800, 0.01),  # epoch 8
        (1099, 0.01),
        (1100, 0.001),  # epoch 11
        (1199, 0.001),  # last iteration of 12 epochs
    ],
)
def test_seed_a_step_with_linear_warmup(it, expected):
    assert lrs(SEED_A, at(it, 100, 12)) == pytest.approx([expected, expected / 10], rel=1e-12)


def test_seed_a_warmup_multiplies_the_stepped_lr_when_a_step_falls_inside_warmup():
    # 50 iterations per epoch: epoch 8 starts at iteration 400, still inside the 500-iteration warmup
    assert lrs(SEED_A, at(400, 50, 12)) == pytest.approx(
        [0.01 * (1 - 0.2 * 0.999), 0.001 * (1 - 0.2 * 0.999)], rel=1e-12
    )
    assert lrs(SEED_A, at(500, 50, 12)) == pytest.approx([0.01, 0.001], rel=1e-12)


SEED_B = {"policy": "poly", "power": 0.9, "min_lr": 1e-4, "by_epoch": False}


@pytest.mark.parametrize("it, coeff", [(0, 1.0), (1000, 0.5**0.9), (1999, (1 / 2000) ** 0.9)])
def test_seed_b_poly_per_iteration_has_one_absolute_floor(it, coeff):
    p = Progress(it // 300, it, 300, 7, 2000)
    expected = [(base - 1e-4) * coeff + 1e-4 for base in BASES]
    assert lrs(SEED_B, p) == pytest.approx(expected, rel=1e-12)


SEED_C = {
    "policy": "CosineAnnealing",
    "warmup": "linear",
    "warmup_iters": 1000,
    "warmup_ratio": 0.1,
    "min_lr_ratio": 1e-5,
}


@pytest.mark.parametrize(
    "it, epoch_fraction, warmup_factor",
    [
        (0, 0, 0.1),
        (500, 2 / 12, 0.55),  # epoch 2 of 12, half way through warmup
        (999, 4 / 12, 1 - 0.9 / 1000),
        (1000, 5 / 12, 1.0),
        (1199, 5 / 12, 1.0),  # by epoch: constant within the epoch
        (2399, 11 / 12, 1.0),  # last epoch uses (E-1)/E
    ],
)
def test_seed_c_cosine_by_epoch_with_iteration_warmup(it, epoch_fraction, warmup_factor):
    expected = [cos_mix(b, b * 1e-5, epoch_fraction) * warmup_factor for b in BASES]
    got = lrs(SEED_C, at(it, 200, 12))
    assert got == pytest.approx(expected, rel=1e-12)
    assert got[0] / got[1] == pytest.approx(10, rel=1e-12)


SEED_D_LR = {"policy": "cyclic", "target_ratio": [10, 1e-4], "cyclic_times": 1, "step_ratio_up": 0.4}
SEED_D_MOMENTUM = {"policy": "cyclic", "target_ratio": [0.85 / 0.95, 1], "cyclic_times": 1, "step_ratio_up": 0.4}


@pytest.mark.parametrize(
    "it, lr_factor, momentum_factor",
    [
        (0, 1.0, 1.0),
        (200, 5.5, (1 + 0.85 / 0.95) / 2),
        (400, 10.0, 0.85 / 0.95),  # peak after int(0.4 * 1000) iterations
        (700, (10 + 1e-4) / 2, (0.85 / 0.95 + 1) / 2),
        (999, cos_mix(10, 1e-4, 599 / 600), cos_mix(0.85 / 0.95, 1, 599 / 600)),
    ],
)
@pytest.mark.parametrize("make", [sgd, adamw])
def test_seed_d_cyclic_lr_and_momentum(make, it, lr_factor, momentum_factor):
    optimizer = make()
    lr = LrSchedule.from_config(SEED_D_LR)
    momentum = MomentumSchedule.from_config(SEED_D_MOMENTUM)
    apply_schedules(optimizer, lr, momentum, Progress(it // 100, it, 100, 10, 1000))
    g0, g1 = optimizer.param_groups
    assert [g0["lr"], g1["lr"]] == pytest.approx([0.1 * lr_factor, 0.01 * lr_factor], rel=1e-12)
    if "betas" in g0:
        assert [g0["betas"][0], g1["betas"][0]] == pytest.approx(
            [0.9 * momentum_factor, 0.8 * momentum_factor], rel=1e-12
        )
        assert (g0["betas"][1], g1["betas"][1]) == (0.999, 0.99)
    else:
        assert [g0["momentum"], g1["momentum"]] == pytest.approx(
            [0.9 * momentum_factor, 0.8 * momentum_factor], rel=1e-12
        )


# ------------------------------------------------------------------------------- the other lr policies


@pytest.mark.parametrize("it, exp", [(0, 0), (29, 0), (30, 1), (59, 1), (60, 2), (99, 3)])
def test_step_interval_per_iteration(it, exp):
    cfg = {"policy": "step", "step": 30, "gamma": 0.5, "by_epoch": False}
    assert lrs(cfg, at(it, 7, 15, 100)) == pytest.approx([b * 0.5**exp for b in BASES], rel=1e-12)


def test_step_min_lr_is_the_same_floor_for_every_group():
    cfg = {"policy": "step", "step": [2, 4], "min_lr": 2e-3}
    assert lrs(cfg, at(10, 10, 6)) == pytest.approx([0.1, 0.01], rel=1e-12)
    assert lrs(cfg, at(20, 10, 6)) == pytest.approx([0.01, 2e-3], rel=1e-12)
    assert lrs(cfg, at(59, 10, 6)) == pytest.approx([2e-3, 2e-3], rel=1e-12)


def test_step_by_epoch_uses_the_epoch_not_the_iteration():
    cfg = {"policy": "step", "step": [3]}
    assert lrs(cfg, at(29, 10, 6)) == BASES
    assert lrs(cfg, at(30, 10, 6)) == pytest.approx([0.01, 0.001], rel=1e-12)


def test_exp_and_inv():
    assert lrs({"policy": "exp", "gamma": 0.9}, at(35, 10, 6)) == pytest.approx([b * 0.9**3 for b in BASES], rel=1e-12)
    inv = {"policy": "inv", "gamma": 0.1, "power": 0.5, "by_epoch": False}
    assert lrs(inv, at(30, 10, 6)) == pytest.approx([b * 4**-0.5 for b in BASES], rel=1e-12)


def test_poly_by_epoch_last_epoch_uses_e_minus_1_over_e():
    cfg = {"policy": "poly", "power": 2.0}
    assert lrs(cfg, at(0, 10, 4)) == BASES
    assert lrs(cfg, at(39, 10, 4)) == pytest.approx([b * 0.25**2 for b in BASES], rel=1e-12)


def test_cosine_absolute_min_lr_is_one_floor_for_every_group():
    cfg = {"policy": "CosineAnnealing", "min_lr": 1e-3, "by_epoch": False}
    assert lrs(cfg, at(50, 10, 10)) == pytest.approx([(0.1 + 1e-3) / 2, (0.01 + 1e-3) / 2], rel=1e-12)


def test_cosine_by_epoch_is_constant_within_an_epoch_and_by_iteration_is_not():
    by_epoch = {"policy": "CosineAnnealing", "min_lr": 0}
    assert lrs(by_epoch, at(20, 10, 4)) == lrs(by_epoch, at(29, 10, 4))
    assert lrs(by_epoch, at(20, 10, 4)) == pytest.approx([0.05, 0.005], rel=1e-12)
    by_iter = by_epoch | {"by_epoch": False}
    assert lrs(by_iter, at(29, 10, 4))[0] == pytest.approx(cos_mix(0.1, 0, 29 / 40), rel=1e-12)


@pytest.mark.parametrize(
    "epoch, fraction",
    [(7, None), (8, 0.0), (9, 0.5)],  # start = round(10 * 0.75) = 8 (round half to even)
)
def test_flat_cosine_starts_at_rounded_percent(epoch, fraction):
    cfg = {"policy": "FlatCosineAnnealing", "min_lr_ratio": 0.1}
    expected = BASES if fraction is None else [cos_mix(b, b * 0.1, fraction) for b in BASES]
    assert lrs(cfg, at(epoch * 5, 5, 10)) == pytest.approx(expected, rel=1e-12)


def test_cosine_restart_periods_and_weights():
    cfg = {"policy": "CosineRestart", "periods": [5, 10], "restart_weights": [1, 0.5], "min_lr": 0, "by_epoch": False}
    assert lrs(cfg, at(0, 100, 1, 15)) == pytest.approx(BASES, rel=1e-12)
    assert lrs(cfg, at(4, 100, 1, 15)) == pytest.approx([cos_mix(b, 0, 0.8) for b in BASES], rel=1e-12)
    assert lrs(cfg, at(5, 100, 1, 15)) == pytest.approx([0.05, 0.005], rel=1e-12)  # restart at half weight
    assert lrs(cfg, at(10, 100, 1, 15)) == pytest.approx([0.025, 0.0025], rel=1e-12)
    with pytest.raises(RecipeError, match=r"lr_config\.periods = \[5, 10\] covers 15 iterations"):
        lrs(cfg, at(15, 100, 1, 20))


def test_linear_annealing():
    cfg = {"policy": "LinearAnnealing", "min_lr_ratio": 0.2}
    assert lrs(cfg, at(50, 10, 10)) == pytest.approx([0.06, 0.006], rel=1e-12)
    assert lrs(cfg, at(99, 10, 10)) == pytest.approx([0.1 * (1 - 0.8 * 0.9), 0.01 * (1 - 0.8 * 0.9)], rel=1e-12)


def test_cyclic_several_cycles_with_gamma_and_linear_anneal():
    cfg = {"policy": "cyclic", "target_ratio": 4.0, "cyclic_times": 2, "gamma": 0.5, "anneal_strategy": "linear"}
    # 100 iterations, 2 cycles of 50, 20 up; float target_ratio r means (r, r / 1e5)

    def p(it: int) -> Progress:
        return Progress(it // 10, it, 10, 10, 100)

    assert lrs(cfg, p(10)) == pytest.approx([0.25, 0.025], rel=1e-12)
    assert lrs(cfg, p(20)) == pytest.approx([0.4, 0.04], rel=1e-12)
    assert lrs(cfg, p(60)) == pytest.approx([0.175, 0.0175], rel=1e-12)  # 2nd cycle peak 1 - 0.5 + 4 * 0.5 = 2.5
    assert lrs(cfg, p(70)) == pytest.approx([0.25, 0.025], rel=1e-12)
    half_way_down = 2.5 + (4e-5 - 2.5) * 0.5
    assert lrs(cfg, p(85)) == pytest.approx([0.1 * half_way_down, 0.01 * half_way_down], rel=1e-12)


def test_cyclic_up_phase_length_is_truncated():
    cfg = {"policy": "cyclic", "target_ratio": [10, 1e-4], "step_ratio_up": 0.25}
    # int(0.25 * 30) = 7: iteration 7 already starts the way down, at the peak
    assert lrs(cfg, Progress(0, 7, 30, 1, 30)) == pytest.approx([1.0, 0.1], rel=1e-12)
    assert lrs(cfg, Progress(0, 6, 30, 1, 30))[0] == pytest.approx(cos_mix(0.1, 1.0, 6 / 7), rel=1e-12)


@pytest.mark.parametrize(
    "it, expected",
    [
        (0, 0.04),  # max_lr / div_factor
        (2, 0.52),  # linear half way up to max_lr (first phase ends at 0.25 * 20 - 1 = 4)
        (4, 1.0),
        (10, 1 + (4e-6 - 1) * 0.4),
        (19, 4e-6),  # max_lr / div_factor / final_div_factor
    ],
)
def test_one_cycle_uses_max_lr_per_group_not_the_optimizers_lr(it, expected):
    cfg = {"policy": "OneCycle", "max_lr": [1.0, 0.1], "pct_start": 0.25, "anneal_strategy": "linear"}
    optimizer = sgd(lrs_=[0.5, 0.5])
    apply_schedules(optimizer, LrSchedule.from_config(cfg), None, Progress(it // 5, it, 5, 4, 20))
    assert [g["initial_lr"] for g in optimizer.param_groups] == pytest.approx([0.04, 0.004], rel=1e-12)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([expected, expected / 10], rel=1e-12)


def test_one_cycle_three_phase_and_total_steps():
    cfg = {"policy": "OneCycle", "max_lr": 1.0, "pct_start": 0.25, "three_phase": True, "anneal_strategy": "linear"}
    schedule = LrSchedule.from_config(cfg)
    assert schedule.values([0.3], Progress(1, 8, 5, 4, 20)) == pytest.approx([0.04], rel=1e-12)
    assert schedule.values([0.3], Progress(2, 12, 5, 4, 20)) == pytest.approx(
        [0.04 + (4e-6 - 0.04) * 4 / 11], rel=1e-12
    )
    longer = LrSchedule.from_config(cfg | {"total_steps": 40})
    assert longer.values([0.3], Progress(1, 9, 5, 4, 20)) == pytest.approx([1.0], rel=1e-12)
    with pytest.raises(RecipeError, match=r"lr_config\.total_steps = 10: expected at least the run's 20"):
        LrSchedule.from_config(cfg | {"total_steps": 10}).values([0.3], Progress(0, 0, 5, 4, 20))


def test_one_cycle_with_an_empty_first_phase_is_rejected():
    cfg = {"policy": "OneCycle", "max_lr": 1.0, "pct_start": 0.1}
    with pytest.raises(RecipeError, match=r"lr_config\.pct_start"):
        LrSchedule.from_config(cfg).values([0.1], Progress(0, 0, 10, 1, 10))


def test_initial_lr_is_seeded_once_and_survives_resume():
    optimizer = sgd()
    schedule = LrSchedule.from_config({"policy": "step", "step": [1]})
    apply_schedules(optimizer, schedule, None, at(10, 10, 3))
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.01, 0.001], rel=1e-12)
    assert [g["initial_lr"] for g in optimizer.param_groups] == BASES
    resumed = sgd(lrs_=[0.01, 0.001])  # a checkpoint carries initial_lr next to the decayed lr
    for group, saved in zip(resumed.param_groups, optimizer.param_groups):
        group["initial_lr"] = saved["initial_lr"]
    apply_schedules(resumed, schedule, None, at(5, 10, 3))
    assert [g["lr"] for g in resumed.param_groups] == BASES


def test_iteration_runner_defaults_lr_by_epoch_to_false():
    cfg = {"policy": "step", "step": [3]}
    assert LrSchedule.from_config(cfg).by_epoch is True
    assert LrSchedule.from_config(cfg, iter_based=True).by_epoch is False
    assert LrSchedule.from_config(cfg | {"by_epoch": True}, iter_based=True).by_epoch is True


# ------------------------------------------------------------------------------- momentum


def momentums(cfg: dict, p: Progress, bases: Sequence[float] = (0.9, 0.8)) -> list[float]:
    return MomentumSchedule.from_config(cfg).values(list(bases), p)


def test_no_momentum_config_leaves_momentum_alone():
    assert MomentumSchedule.from_config(None) is None
    assert MomentumSchedule.from_config({}) is None
    optimizer = sgd()
    apply_schedules(optimizer, LrSchedule.from_config(None), None, at(3, 10, 2))
    assert [g["momentum"] for g in optimizer.param_groups] == [0.9, 0.8]


def test_momentum_step_cosine_linear():
    step = {"policy": "step", "step": [2], "min_momentum": 0.42}  # gamma defaults to 0.5
    assert momentums(step, at(19, 10, 4)) == [0.9, 0.8]
    assert momentums(step, at(20, 10, 4)) == pytest.approx([0.45, 0.42], rel=1e-12)
    cos = {"policy": "CosineAnnealing", "min_momentum_ratio": 0.5, "by_epoch": False}
    assert momentums(cos, at(20, 10, 4)) == pytest.approx([0.675, 0.6], rel=1e-12)
    linear = {"policy": "LinearAnnealing", "min_momentum": 0.5}
    assert momentums(linear, at(25, 10, 4)) == pytest.approx([0.7, 0.65], rel=1e-12)


@pytest.mark.parametrize(
    "kind, it, divisor",
    [("constant", 0, 0.9), ("linear", 0, 0.9), ("linear", 5, 0.95), ("exp", 5, 0.9**0.5), ("linear", 10, 1.0)],
)
def test_momentum_warmup_divides_by_the_ratio(kind, it, divisor):
    cfg = {"policy": "CosineAnnealing", "min_momentum_ratio": 1.0, "warmup": kind, "warmup_iters": 10}
    assert momentums(cfg, at(it, 100, 2)) == pytest.approx([0.9 / divisor, 0.8 / divisor], rel=1e-12)


@pytest.mark.parametrize("make", [sgd, adamw])
def test_one_cycle_momentum_runs_between_its_own_bounds(make):
    optimizer = make()
    lr = LrSchedule.from_config({"policy": "OneCycle", "max_lr": 1.0, "pct_start": 0.25, "anneal_strategy": "linear"})
    cfg = {"policy": "OneCycle", "base_momentum": [0.8, 0.7], "pct_start": 0.25, "anneal_strategy": "linear"}
    momentum = MomentumSchedule.from_config(cfg)

    def momentum_at(it: int) -> list[float]:
        apply_schedules(optimizer, lr, momentum, Progress(it // 5, it, 5, 4, 20))
        return [g["momentum"] if "momentum" in g else g["betas"][0] for g in optimizer.param_groups]

    assert momentum_at(0) == pytest.approx([0.95, 0.95], rel=1e-12)  # max_momentum, whatever the optimizer had
    assert momentum_at(2) == pytest.approx([0.875, 0.825], rel=1e-12)
    assert momentum_at(4) == pytest.approx([0.8, 0.7], rel=1e-12)
    assert momentum_at(19) == pytest.approx([0.95, 0.95], rel=1e-12)
    if "betas" in optimizer.param_groups[0]:
        assert [g["betas"][1] for g in optimizer.param_groups] == [0.999, 0.99]


@pytest.mark.parametrize("it, expected", [(0, 0.95), (4, 0.85), (6, 0.9), (8, 0.95), (12, 0.95), (19, 0.95)])
def test_one_cycle_momentum_three_phase_ends_flat_at_max(it, expected):
    cfg = {"policy": "OneCycle", "pct_start": 0.25, "three_phase": True, "anneal_strategy": "linear"}
    # phases end at 0.25 * 20 - 1 = 4, 2 * 0.25 * 20 - 2 = 8 and 19
    assert momentums(cfg, Progress(it // 5, it, 5, 4, 20)) == pytest.approx([expected, expected], rel=1e-12)


def test_momentum_needs_momentum_or_betas():
    optimizer = SimpleNamespace(param_groups=[{"lr": 0.1}])
    momentum = MomentumSchedule.from_config({"policy": "step", "step": 1})
    with pytest.raises(RecipeError, match="neither momentum nor betas"):
        apply_schedules(optimizer, LrSchedule.from_config(None), momentum, at(0, 10, 2))


# ------------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "cfg, patterns",
    [
        ({"policy": "stepp", "step": 3}, ["lr_config.policy = 'stepp'", 'did you mean "step"', "CosineAnnealing"]),
        ({"policy": "STEP", "step": 3}, ["lr_config.policy = 'STEP'"]),  # only all-lowercase names are title-cased
        ({"policy": "cosineannealing", "min_lr": 0}, ['did you mean "CosineAnnealing"']),
        ({"policy": "cosineAnnealing", "min_lr": 0}, ["lr_config.policy = 'cosineAnnealing'"]),  # mixed case: kept
        ({"policy": 3}, ["lr_config.policy = 3"]),
        ({"step": 3}, ["lr_config.policy is missing"]),
        ({"policy": "CosineAnnealing", "min_lrr": 0}, ["lr_config.min_lrr", 'did you mean "min_lr"']),
        ({"policy": "step"}, ["lr_config.step is missing", "policy 'step'"]),
        ({"policy": "step", "step": "8"}, ["lr_config.step = '8'", "positive integer"]),
        ({"policy": "step", "step": [8, 0]}, ["lr_config.step = [8, 0]"]),
        ({"policy": "step", "step": 3, "gamma": "x"}, ["lr_config.gamma = 'x'", "expected a number"]),
        ({"policy": "CosineAnnealing"}, ["lr_config.min_lr / lr_config.min_lr_ratio", "neither"]),
        ({"policy": "CosineAnnealing", "min_lr": 0, "min_lr_ratio": 0.1}, ["both"]),
        ({"policy": "cyclic", "by_epoch": True}, ["lr_config.by_epoch = true", "expected false"]),
        ({"policy": "OneCycle", "max_lr": 1, "by_epoch": True}, ["lr_config.by_epoch"]),
        ({"policy": "OneCycle"}, ["lr_config.max_lr is missing"]),
        ({"policy": "OneCycle", "max_lr": "1"}, ["lr_config.max_lr = '1'"]),
        ({"policy": "cyclic", "target_ratio": [1, 2, 3]}, ["lr_config.target_ratio = [1, 2, 3]"]),
        ({"policy": "cyclic", "step_ratio_up": 1.0}, ["lr_config.step_ratio_up = 1.0", "[0, 1)"]),
        (
            {"policy": "cyclic", "anneal_strategy": "cosine"},
            ["lr_config.anneal_strategy = 'cosine'", 'did you mean "cos"'],
        ),
        (
            {"policy": "fixed", "warmup": "linaer", "warmup_iters": 5},
            ["lr_config.warmup = 'linaer'", 'did you mean "linear"'],
        ),
        ({"policy": "fixed", "warmup": "linear"}, ["lr_config.warmup_iters is missing", "positive integer"]),
        ({"policy": "fixed", "warmup": "linear", "warmup_iters": 5, "warmup_ratio": 0}, ["lr_config.warmup_ratio = 0"]),
        ({"policy": "fixed", "by_epoch": 1}, ["lr_config.by_epoch = 1", "true or false"]),
        (
            {"policy": "CosineRestart", "periods": [5], "restart_weights": [1, 1], "min_lr": 0},
            ["lr_config.restart_weights"],
        ),
        ({"policy": "FlatCosineAnnealing", "start_percent": 1.5, "min_lr": 0}, ["lr_config.start_percent = 1.5"]),
    ],
)
def test_lr_config_errors_name_the_key_the_value_and_what_is_expected(cfg, patterns):
    with pytest.raises(RecipeError) as err:
        LrSchedule.from_config(cfg)
    for pattern in patterns:
        assert pattern in str(err.value)


@pytest.mark.parametrize(
    "cfg, patterns",
    [
        ({"policy": "poly"}, ["momentum_config.policy = 'poly'", "cyclic", "OneCycle"]),
        ({"policy": "step", "step": 2, "warmup_by_epoch": True}, ["momentum_config.warmup_by_epoch"]),
        ({"policy": "CosineAnnealing", "min_lr": 0.5}, ["unknown key 'momentum_config.min_lr'"]),
        ({"policy": "CosineAnnealing", "min_momentun": 0.5}, ['did you mean "min_momentum"']),
        ({"policy": "cyclic", "by_epoch": True}, ["momentum_config.by_epoch = true"]),
    ],
)
def test_momentum_config_errors(cfg, patterns):
    with pytest.raises(RecipeError) as err:
        MomentumSchedule.from_config(cfg)
    for pattern in patterns:
        assert pattern in str(err.value)


def test_custom_path_appears_in_errors():
    with pytest.raises(RecipeError, match=r"^unknown key 'x\.lr_config\.bogus'"):
        LrSchedule.from_config({"policy": "fixed", "bogus": 1}, path="x.lr_config")


# ------------------------------------------------------------------------------- rows, CSV, PNG


def test_schedule_rows_cover_every_iteration_of_an_iteration_run():
    rows = schedule_rows({"policy": "poly", "by_epoch": False}, None, 0.1, 0.9, 10, None, 25)
    assert [r[0] for r in rows] == list(range(25))
    assert [r[1] for r in rows] == [0] * 10 + [1] * 10 + [2] * 5
    assert rows[5][2] == pytest.approx(0.1 * (1 - 5 / 25), rel=1e-12)
    assert {r[3] for r in rows} == {0.9}


def test_schedule_rows_follow_both_schedules():
    rows = schedule_rows(SEED_D_LR, SEED_D_MOMENTUM, 0.01, 0.95, 100, 10, None)
    assert len(rows) == 1000
    assert rows[400][2:] == pytest.approx((0.1, 0.85), rel=1e-12)


def test_schedule_rows_without_momentum():
    rows = schedule_rows(None, None, 0.1, None, 4, 2, None)
    assert rows == [(i, i // 4, 0.1, None) for i in range(8)]
    with pytest.raises(RecipeError, match="neither momentum nor betas"):
        schedule_rows(None, {"policy": "step", "step": 1}, 0.1, None, 4, 2, None)


def test_csv_header_and_rows(tmp_path, capsys):
    rows = [(0, 0, 0.1, 0.9), (1, 0, 0.05, None)]
    path = tmp_path / "s.csv"
    write_schedule_csv(rows, path)
    assert path.read_text() == "iter,epoch,lr,momentum\n0,0,0.1,0.9\n1,0,0.05,\n"
    write_schedule_csv(rows, "-")
    assert capsys.readouterr().out == path.read_text()


@pytest.mark.parametrize("momentum", [0.9, None])
def test_png_is_written(tmp_path, momentum):
    rows = schedule_rows(SEED_A | {"warmup_iters": 5}, None, 0.1, momentum, 4, 12, None)
    path = tmp_path / "s.png"
    plot_schedule_png(rows, path, title="seed a")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_png_without_matplotlib_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(RecipeError, match=r'pip install "accel_trainer\[plot\]"'):
        plot_schedule_png([(0, 0, 0.1, None)], tmp_path / "s.png")
    assert not (tmp_path / "s.png").exists()


@pytest.mark.parametrize("name", ["step_warmup", "poly", "cosine_warmup", "cyclic"])
def test_documented_seed_schedules_preview(name, tmp_path):
    from accel_trainer.cli import main

    out = tmp_path / f"{name}.csv"
    assert main(["schedule", str(REPO_DOCS / f"{name}.toml"), "--iters-per-epoch", "500", "--csv", str(out)]) == 0
    rows = out.read_text().splitlines()
    assert rows[0] == "iter,epoch,lr,momentum" and len(rows) == 1 + 12 * 500


def test_schedule_counts_iterations_like_the_train_loader(tiny_recipe):
    from accel_trainer import load_recipe
    from accel_trainer.commands.schedule import dataset_iters_per_epoch

    odd = {"data.shapes.num_train": 21, "data.batch_size": 4}
    assert dataset_iters_per_epoch(load_recipe(tiny_recipe)) == 8  # 128 images / 16
    # Classification leaves the short last batch out, as its train loader does (21 = 5 x 4 + 1).
    assert dataset_iters_per_epoch(load_recipe(tiny_recipe, odd)) == 5
    # 5 batches, 4 per optimizer step: the last step takes the one left.
    assert dataset_iters_per_epoch(load_recipe(tiny_recipe, {**odd, "accelerate.gradient_accumulation_steps": 4})) == 2
