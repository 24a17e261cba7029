"""mmcv config files on disk, and the lines their values come from, for the reader and the importer
of mmcv configs."""

from __future__ import annotations

from pathlib import Path

# mmdet's configs/_base_/default_runtime.py as quoted in the runtime-config seed document
DEFAULT_RUNTIME = """\
checkpoint_config = dict(interval=5)
# yapf:disable
log_config = dict(
    interval=50,
    hooks=[
        dict(type='TextLoggerHook'),
        # dict(type='TensorboardLoggerHook')
    ])
# yapf:enable
custom_hooks = [dict(type='NumClassCheckHook')]

dist_params = dict(backend='nccl')
log_level = 'INFO'
load_from = None
resume_from = None
workflow = [('train', 1)]

# disable opencv multithreading to avoid system being overloaded
opencv_num_threads = 0
# set multi-process start method as `fork` to speed up the training
mp_start_method = 'fork'

# Default setting for scaling LR automatically
#   - `enable` means enable scaling LR automatically
#       or not by default.
#   - `base_batch_size` = (8 GPUs) x (2 samples per GPU).
auto_scale_lr = dict(enable=False, base_batch_size=16)
"""


def write(path: Path, text: str) -> Path:
    """`text` as the file `path`, its folders made."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def line_of(text: str, start: str) -> int:
    """The 1-based line of `text` that starts with `start`, as origins report it."""
    return next(i for i, line in enumerate(text.splitlines(), 1) if line.startswith(start))
