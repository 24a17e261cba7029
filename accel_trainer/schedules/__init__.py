"""LR and momentum schedules with mmcv 1.x updater semantics: pure policies (`policies`), their
application to param groups with warmup (`apply`) and a whole-run preview (`preview`)."""

from .apply import LrSchedule, MomentumSchedule, ScheduleSpec, apply_schedules, rescale_initial_lr
from .policies import Progress

__all__ = [
    "LrSchedule",
    "MomentumSchedule",
    "Progress",
    "ScheduleSpec",
    "apply_schedules",
    "rescale_initial_lr",
]
