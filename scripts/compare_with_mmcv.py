"""Compare accel_trainer.schedules with the real mmcv 1.7.2 updater hooks, every iteration of many runs.

Development tool, not run in CI. mmcv 1.x needs its own environment, e.g.:

    python3 -m venv /tmp/mmcvref
    echo "$PWD/.venv/lib/python3.11/site-packages" > /tmp/mmcvref/lib/python3.11/site-packages/main.pth
    /tmp/mmcvref/bin/pip install wheel 'setuptools<70' addict yapf termcolor opencv-python-headless packaging
    MMCV_WITH_OPS=0 /tmp/mmcvref/bin/pip install --no-deps --no-build-isolation mmcv==1.7.2
    /tmp/mmcvref/bin/python scripts/compare_with_mmcv.py

mmcv's hooks run against a stand-in runner that calls before_run once, before_train_epoch at every
epoch start and before_train_iter before every iteration (lr hook first, as its priority says).
Ours runs `apply_schedules` with the same counters. Every group's lr and momentum (or beta1) is
compared at every iteration; the script prints the largest relative error per case and exits 1
if any exceeds the tolerance.
"""

from __future__ import annotations

import argparse
import copy
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from accel_trainer.schedules import LrSchedule, MomentumSchedule, Progress, apply_schedules
from accel_trainer.schedules.preview import schedule_rows

TOLERANCE = 1e-6
PER_GROUP_KEYS = ("max_lr", "base_momentum", "max_momentum")  # a list means one value per param group


@dataclass
class Case:
    name: str
    lr: dict | None
    momentum: dict | None
    optimizer: str  # "sgd" or "adam"
    iters_per_epoch: int
    max_epochs: int
    max_iters: int
    start_epoch: int = 0  # > 0: a resumed run (initial_lr / initial_momentum already in the groups)
    errors: dict = field(default_factory=dict)


def make_optimizer(kind: str) -> torch.optim.Optimizer:
    """Two param groups with different lrs and momentums, so per-group bases and floors show."""
    a, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    if kind == "sgd":
        return torch.optim.SGD([{"params": [a]}, {"params": [b], "lr": 0.01, "momentum": 0.8}], lr=0.1, momentum=0.9)
    return torch.optim.AdamW(
        [{"params": [a]}, {"params": [b], "lr": 0.01, "betas": (0.8, 0.99)}], lr=0.1, betas=(0.9, 0.999)
    )


def momentum_of(group: dict) -> float:
    return group["momentum"] if "momentum" in group else group["betas"][0]


def mmcv_hook(cfg: dict | None, suffix: str):
    """Build the hook the way mmcv's BaseRunner.register_lr_hook / register_momentum_hook does."""
    import mmcv
    from mmcv.runner.hooks import HOOKS

    if not cfg:
        return None
    cfg = copy.deepcopy(cfg)
    policy = cfg.pop("policy")
    if policy == policy.lower():
        policy = policy.title()
    if isinstance(cfg.get("target_ratio"), list):  # TOML lists are mmcv tuples
        cfg["target_ratio"] = tuple(cfg["target_ratio"])
    cfg["type"] = policy + suffix
    return mmcv.build_from_cfg(cfg, HOOKS)


class StandInRunner:
    """The attributes mmcv's updater hooks read from a runner."""

    def __init__(self, optimizer: torch.optim.Optimizer, case: Case) -> None:
        self.optimizer = optimizer
        self.epoch = case.start_epoch
        self.iter = case.start_epoch * case.iters_per_epoch
        self.max_epochs = case.max_epochs
        self.max_iters = case.max_iters
        self.data_loader = range(case.iters_per_epoch)


def seeded(case: Case, optimizer: torch.optim.Optimizer, reference: torch.optim.Optimizer | None) -> None:
    """For resumed cases, copy what a checkpoint would carry: the seeded initial values."""
    if reference is None:
        return
    for group, ref in zip(optimizer.param_groups, reference.param_groups):
        for key in ("initial_lr", "initial_momentum"):
            if key in ref:
                group[key] = ref[key]


def run_mmcv(case: Case) -> list[tuple[list[float], list[float]]]:
    optimizer = make_optimizer(case.optimizer)
    if case.start_epoch:
        # A fresh run seeds the initial values; the resumed run starts from those.
        seed_run = copy.copy(case)
        seed_run.start_epoch = 0
        seed_opt = make_optimizer(case.optimizer)
        hooks = [h for h in (mmcv_hook(case.lr, "LrUpdaterHook"), mmcv_hook(case.momentum, "MomentumUpdaterHook")) if h]
        for hook in hooks:
            hook.before_run(StandInRunner(seed_opt, seed_run))
        seeded(case, optimizer, seed_opt)
    hooks = [h for h in (mmcv_hook(case.lr, "LrUpdaterHook"), mmcv_hook(case.momentum, "MomentumUpdaterHook")) if h]
    runner = StandInRunner(optimizer, case)
    out = []
    for hook in hooks:
        hook.before_run(runner)
    for epoch in range(case.start_epoch, case.max_epochs):
        runner.epoch = epoch
        for hook in hooks:
            hook.before_train_epoch(runner)
        for _ in range(case.iters_per_epoch):
            if runner.iter >= case.max_iters:
                break
            for hook in hooks:
                hook.before_train_iter(runner)
            groups = optimizer.param_groups
            out.append(([g["lr"] for g in groups], [momentum_of(g) for g in groups]))
            runner.iter += 1
    return out


def run_ours(case: Case) -> list[tuple[list[float], list[float]]]:
    lr = LrSchedule.from_config(case.lr)
    momentum = MomentumSchedule.from_config(case.momentum)
    optimizer = make_optimizer(case.optimizer)
    if case.start_epoch:
        seed_opt = make_optimizer(case.optimizer)
        apply_schedules(seed_opt, lr, momentum, Progress(0, 0, case.iters_per_epoch, case.max_epochs, case.max_iters))
        seeded(case, optimizer, seed_opt)
    out = []
    for it in range(case.start_epoch * case.iters_per_epoch, case.max_iters):
        p = Progress(it // case.iters_per_epoch, it, case.iters_per_epoch, case.max_epochs, case.max_iters)
        apply_schedules(optimizer, lr, momentum, p)
        groups = optimizer.param_groups
        out.append(([g["lr"] for g in groups], [momentum_of(g) for g in groups]))
    return out


def rel_err(a: float, b: float) -> float:
    scale = max(abs(a), abs(b))
    return 0.0 if scale == 0 else abs(a - b) / scale


def compare(case: Case) -> None:
    ref, ours = run_mmcv(case), run_ours(case)
    if len(ref) != len(ours):
        raise SystemExit(f"{case.name}: {len(ref)} mmcv iterations vs {len(ours)} ours")
    case.errors["lr"] = max(rel_err(a, b) for (r, _), (o, _) in zip(ref, ours) for a, b in zip(r, o))
    case.errors["momentum"] = max(rel_err(a, b) for (_, r), (_, o) in zip(ref, ours) for a, b in zip(r, o))
    per_group_lists = any(
        isinstance(cfg.get(key), list) for cfg in (case.lr or {}, case.momentum or {}) for key in PER_GROUP_KEYS
    )
    if case.optimizer == "sgd" and not case.start_epoch and not per_group_lists:
        base_momentum = make_optimizer("sgd").param_groups[0]["momentum"]
        rows = schedule_rows(
            case.lr, case.momentum, 0.1, base_momentum, case.iters_per_epoch, case.max_epochs, case.max_iters
        )
        case.errors["rows"] = max(max(rel_err(row[2], r[0]), rel_err(row[3], m[0])) for row, (r, m) in zip(rows, ref))


SHAPES = {
    # name: (iters_per_epoch, max_epochs, max_iters)
    "E12x7": (7, 12, 84),
    "I95/10": (10, 10, 95),  # iteration-based: the last epoch is partial
}

LR_WARMUPS = {
    "": {},
    "+const": {"warmup": "constant", "warmup_iters": 5, "warmup_ratio": 0.2},
    "+linear": {"warmup": "linear", "warmup_iters": 13, "warmup_ratio": 0.001},
    "+exp": {"warmup": "exp", "warmup_iters": 13, "warmup_ratio": 0.01},
    "+linear/ep": {"warmup": "linear", "warmup_iters": 2, "warmup_ratio": 0.1, "warmup_by_epoch": True},
}

MOMENTUM_WARMUPS = {
    "": {},
    "+const": {"warmup": "constant", "warmup_iters": 5, "warmup_ratio": 0.95},
    "+linear": {"warmup": "linear", "warmup_iters": 13},
    "+exp": {"warmup": "exp", "warmup_iters": 13, "warmup_ratio": 0.8},
}


def lr_policies(by_epoch: bool, max_epochs: int, max_iters: int) -> dict[str, dict]:
    """Policy tables with step sizes in the unit the policy counts (epochs or iterations)."""
    total = max_epochs if by_epoch else max_iters
    u = 1 if by_epoch else max(1, max_iters // max_epochs)
    first = total // 3
    return {
        "fixed": {"policy": "fixed"},
        "step-int": {"policy": "step", "step": 4 * u, "gamma": 0.5},
        "step-list-floor": {"policy": "step", "step": [5 * u, 9 * u], "min_lr": 2e-3},
        "exp": {"policy": "exp", "gamma": 0.9 if by_epoch else 0.99},
        "poly": {"policy": "poly", "power": 0.9, "min_lr": 1e-4},
        "poly-default": {"policy": "poly"},
        "inv": {"policy": "inv", "gamma": 0.1 if by_epoch else 0.01, "power": 0.75},
        "cos-min_lr": {"policy": "CosineAnnealing", "min_lr": 1e-4},
        "cos-ratio": {"policy": "CosineAnnealing", "min_lr_ratio": 1e-2},
        "flatcos": {"policy": "FlatCosineAnnealing", "start_percent": 0.5, "min_lr_ratio": 0.01},
        "flatcos-default": {"policy": "FlatCosineAnnealing", "min_lr": 0.0},
        "restart": {
            "policy": "CosineRestart",
            "periods": [first, total - first],
            "restart_weights": [1, 0.5],
            "min_lr": 1e-5,
        },
        "restart-ratio": {"policy": "CosineRestart", "periods": [total], "min_lr_ratio": 0.1},
        "linear-ratio": {"policy": "LinearAnnealing", "min_lr_ratio": 0.05},
        "linear-min_lr": {"policy": "LinearAnnealing", "min_lr": 0},
    }


ITER_ONLY_LR = {
    "cyclic": {"policy": "cyclic", "target_ratio": [10, 1e-4], "cyclic_times": 1, "step_ratio_up": 0.4},
    "cyclic-x2-gamma-linear": {
        "policy": "cyclic",
        "target_ratio": [5, 1e-3],
        "cyclic_times": 2,
        "gamma": 0.5,
        "anneal_strategy": "linear",
    },
    "cyclic-float": {"policy": "cyclic", "target_ratio": 5.0, "step_ratio_up": 0.25},
    "cyclic-one": {"policy": "cyclic", "target_ratio": [8], "cyclic_times": 3, "step_ratio_up": 0.0},
    "onecycle": {"policy": "OneCycle", "max_lr": 0.5},
    "onecycle-list-3ph-lin": {
        "policy": "OneCycle",
        "max_lr": [1.0, 0.1],
        "three_phase": True,
        "anneal_strategy": "linear",
        "pct_start": 0.25,
    },
    "onecycle-total": {
        "policy": "OneCycle",
        "max_lr": 0.3,
        "total_steps": 120,
        "div_factor": 10,
        "final_div_factor": 100,
    },
}


def momentum_policies(by_epoch: bool, max_epochs: int, max_iters: int) -> dict[str, dict]:
    u = 1 if by_epoch else max(1, max_iters // max_epochs)
    return {
        "m-step": {"policy": "step", "step": [5 * u], "gamma": 0.5, "min_momentum": 0.42},
        "m-step-int": {"policy": "step", "step": 3 * u},
        "m-cos-ratio": {"policy": "CosineAnnealing", "min_momentum_ratio": 0.8},
        "m-cos-abs": {"policy": "CosineAnnealing", "min_momentum": 0.5},
        "m-linear": {"policy": "LinearAnnealing", "min_momentum_ratio": 0.9},
    }


ITER_ONLY_MOMENTUM = {
    "m-cyclic": {"policy": "cyclic", "target_ratio": [0.85 / 0.95, 1], "cyclic_times": 1, "step_ratio_up": 0.4},
    "m-cyclic-x2-gamma": {"policy": "cyclic", "target_ratio": [0.8, 0.95], "cyclic_times": 2, "gamma": 0.6},
    "m-onecycle": {"policy": "OneCycle"},
    "m-onecycle-3ph-list": {
        "policy": "OneCycle",
        "base_momentum": [0.8, 0.7],
        "max_momentum": [0.95, 0.9],
        "three_phase": True,
        "anneal_strategy": "linear",
    },
}

SEEDS = [
    # The seed recipes' examples at realistic sizes.
    Case(
        "seed-a step+linear 12ep",
        {"policy": "step", "warmup": "linear", "warmup_iters": 500, "warmup_ratio": 0.001, "step": [8, 11]},
        None,
        "sgd",
        100,
        12,
        1200,
    ),
    Case(
        "seed-b poly iter",
        {"policy": "poly", "power": 0.9, "min_lr": 1e-4, "by_epoch": False},
        None,
        "sgd",
        250,
        8,
        2000,
    ),
    Case(
        "seed-c cos+linear",
        {
            "policy": "CosineAnnealing",
            "warmup": "linear",
            "warmup_iters": 1000,
            "warmup_ratio": 0.1,
            "min_lr_ratio": 1e-5,
        },
        None,
        "sgd",
        200,
        12,
        2400,
    ),
    Case(
        "seed-d cyclic+m-cyclic sgd",
        {"policy": "cyclic", "target_ratio": [10, 1e-4], "cyclic_times": 1, "step_ratio_up": 0.4},
        {"policy": "cyclic", "target_ratio": [0.85 / 0.95, 1], "cyclic_times": 1, "step_ratio_up": 0.4},
        "sgd",
        100,
        10,
        1000,
    ),
    Case(
        "seed-d cyclic+m-cyclic adamw",
        {"policy": "cyclic", "target_ratio": [10, 1e-4], "cyclic_times": 1, "step_ratio_up": 0.4},
        {"policy": "cyclic", "target_ratio": [0.85 / 0.95, 1], "cyclic_times": 1, "step_ratio_up": 0.4},
        "adam",
        100,
        10,
        1000,
    ),
]


def cases() -> list[Case]:
    out = list(SEEDS)
    for shape, (ipe, epochs, iters) in SHAPES.items():
        for by_epoch in (True, False):
            table = lr_policies(by_epoch, epochs, iters) | ({} if by_epoch else ITER_ONLY_LR)
            for name, cfg in table.items():
                for wname, warm in LR_WARMUPS.items():
                    lr = cfg | {"by_epoch": by_epoch} | warm
                    out.append(Case(f"{shape} {name}{wname} by_epoch={by_epoch}", lr, None, "sgd", ipe, epochs, iters))
            mtable = momentum_policies(by_epoch, epochs, iters) | ({} if by_epoch else ITER_ONLY_MOMENTUM)
            for name, cfg in mtable.items():
                for wname, warm in MOMENTUM_WARMUPS.items():
                    mom = cfg | {"by_epoch": by_epoch} | warm
                    lr = {"policy": "CosineAnnealing", "min_lr": 0, "by_epoch": by_epoch}
                    for opt in ("sgd", "adam"):
                        out.append(
                            Case(f"{shape} {name}{wname} by_epoch={by_epoch} {opt}", lr, mom, opt, ipe, epochs, iters)
                        )
    out += [
        Case("no lr_config", None, None, "sgd", 7, 12, 84),
        Case(
            "resume@5 step",
            {"policy": "step", "step": [4, 9], "warmup": "linear", "warmup_iters": 40},
            None,
            "sgd",
            7,
            12,
            84,
            5,
        ),
        Case(
            "resume@3 onecycle+m-onecycle adamw",
            ITER_ONLY_LR["onecycle"],
            ITER_ONLY_MOMENTUM["m-onecycle"],
            "adam",
            7,
            12,
            84,
            3,
        ),
        Case("resume@6 cyclic+m-cyclic", ITER_ONLY_LR["cyclic"], ITER_ONLY_MOMENTUM["m-cyclic"], "sgd", 7, 12, 84, 6),
        Case(
            "onecycle+m-onecycle-3ph adamw",
            ITER_ONLY_LR["onecycle-list-3ph-lin"],
            ITER_ONLY_MOMENTUM["m-onecycle-3ph-list"],
            "adam",
            7,
            12,
            84,
        ),
    ]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-q", "--quiet", action="store_true", help="only print mismatches and the summary")
    args = parser.parse_args()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import mmcv
    except ImportError:
        print("mmcv is not importable; see this script's docstring for a reference environment", file=sys.stderr)
        return 2
    if mmcv.__version__ != "1.7.2":
        print(f"warning: comparing against mmcv {mmcv.__version__}, not 1.7.2", file=sys.stderr)
    all_cases = cases()
    worst = {"lr": 0.0, "momentum": 0.0, "rows": 0.0}
    bad = 0
    print(f"{'case':<62} {'lr':>9} {'momentum':>9} {'rows':>9}")
    for case in all_cases:
        compare(case)
        failed = any(v > TOLERANCE for v in case.errors.values())
        bad += failed
        for key, value in case.errors.items():
            worst[key] = max(worst[key], value)
        if failed or not args.quiet:
            cells = [f"{case.errors[k]:9.2e}" if k in case.errors else f"{'-':>9}" for k in ("lr", "momentum", "rows")]
            print(f"{case.name:<62} {' '.join(cells)}{'  MISMATCH' if failed else ''}")
    print(
        f"{len(all_cases)} cases, {bad} over {TOLERANCE:g}; max relative error: "
        f"lr {worst['lr']:.2e}, momentum {worst['momentum']:.2e}, schedule_rows {worst['rows']:.2e}"
    )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
