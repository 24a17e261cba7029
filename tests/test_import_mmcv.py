from __future__ import annotations

import subprocess
import sys

import pytest

from accel_trainer.cli import main
from accel_trainer.commands.import_mmcv import convert_config
from accel_trainer.commands.mmcv_config import read_mmcv_config
from accel_trainer.recipe.load import load_recipe
from accel_trainer.recipe.reading import tomllib

from .helpers import REPO
from .helpers.mmcv_configs import DEFAULT_RUNTIME, line_of, write
from .helpers.recipes import TINY_CLS, derive, write_recipe

# the seed document's config after inheriting default_runtime.py (AdamW with paramwise_cfg)
ADAMW_CHILD = """\
_base_ = [
    '../_base_/default_runtime.py'
]

# optimizer
optimizer = dict(
    type='AdamW',
    lr=0.0001,
    weight_decay=0.0001,
    paramwise_cfg=dict(custom_keys={'backbone': dict(lr_mult=0.1, decay_mult=1.0)}))

evaluation = dict(interval=5, metric='bbox')
optimizer_config = dict(grad_clip=dict(max_norm=0.1, norm_type=2))
checkpoint_config = dict(interval=20)
log_config = dict(interval=50,
                  hooks=[dict(type='TextLoggerHook')])

# learning policy
lr_config = dict(policy='step', step=[100])
runner = dict(type='EpochBasedRunner', max_epochs=150)
"""

# the seed document's lr_config examples
LR_STEP = """\
lr_config = dict(
    policy='step',
    warmup='linear',
    warmup_iters=500,
    warmup_ratio=0.001,
    step=[8, 11])
"""
LR_POLY = "lr_config = dict(policy='poly', power=0.9, min_lr=1e-4, by_epoch=False)\n"
LR_COSINE = """\
lr_config = dict(
    policy='CosineAnnealing',
    warmup='linear',
    warmup_iters=1000,
    warmup_ratio=1.0 / 10,
    min_lr_ratio=1e-5)
"""
LR_CYCLIC = """\
lr_config = dict(
    policy='cyclic',
    target_ratio=(10, 1e-4),
    cyclic_times=1,
    step_ratio_up=0.4,
)
momentum_config = dict(
    policy='cyclic',
    target_ratio=(0.85 / 0.95, 1),
    cyclic_times=1,
    step_ratio_up=0.4,
)
"""

# A user recipe on the imported runtime: its own model and data, everything else from runtime.toml.
MODEL_DATA = derive(
    TINY_CLS,
    _base_=["runtime.toml"],
    work_dir=None,
    workflow=None,
    data={"batch_size": 8, "pin_memory": None, "shapes": None, "augment": None},
    optimizer=None,
    runner=None,
    log_config=None,
    accelerate=None,
)


def convert(path):
    return convert_config(*read_mmcv_config(path))


@pytest.fixture
def adamw_config(tmp_path):
    write(tmp_path / "_base_" / "default_runtime.py", DEFAULT_RUNTIME)
    return write(tmp_path / "configs" / "adamw.py", ADAMW_CHILD)


def test_seed_adamw_config_converts_every_runtime_section(adamw_config):
    recipe, skipped = convert(adamw_config)
    assert recipe["optimizer"] == {
        "type": "AdamW",
        "lr": 0.0001,
        "weight_decay": 0.0001,
        "paramwise_cfg": {"custom_keys": {"backbone": {"lr_mult": 0.1, "decay_mult": 1.0}}},
    }
    assert recipe["optimizer_config"] == {"grad_clip": {"max_norm": 0.1, "norm_type": 2}}
    assert recipe["lr_config"] == {"policy": "step", "step": [100]}
    assert recipe["runner"] == {"type": "EpochBasedRunner", "max_epochs": 150}
    assert recipe["checkpoint_config"] == {"interval": 20}
    assert recipe["log_config"] == {"interval": 50, "hooks": [{"type": "TextLoggerHook"}]}
    assert recipe["evaluation"] == {"interval": 5, "metric": "bbox"}
    assert recipe["workflow"] == [["train", 1]]
    assert recipe["custom_hooks"] == [{"type": "NumClassCheckHook"}]
    assert recipe["auto_scale_lr"] == {"enable": False, "base_batch_size": 16}
    assert recipe["log_level"] == "INFO" and recipe["mp_start_method"] == "fork"
    assert "load_from" not in recipe and "resume_from" not in recipe
    assert [(s.key, s.origin.line) for s in skipped] == [
        ("dist_params", line_of(DEFAULT_RUNTIME, "dist_params")),
        ("opencv_num_threads", line_of(DEFAULT_RUNTIME, "opencv_num_threads")),
    ]
    assert all(s.origin.file.endswith("default_runtime.py") for s in skipped)


def test_grad_clip_none_leaves_optimizer_config_out(tmp_path):
    config = write(
        tmp_path / "c.py",
        "optimizer = dict(type='SGD', lr=0.02, momentum=0.9, weight_decay=0.0001)\n"
        "optimizer_config = dict(grad_clip=None)\n",
    )
    recipe, skipped = convert(config)
    assert "optimizer_config" not in recipe
    assert recipe["optimizer"] == {"type": "SGD", "lr": 0.02, "momentum": 0.9, "weight_decay": 0.0001}
    assert skipped == []


@pytest.mark.parametrize(
    "source, lr_config",
    [
        (LR_STEP, {"policy": "step", "warmup": "linear", "warmup_iters": 500, "warmup_ratio": 0.001, "step": [8, 11]}),
        (LR_POLY, {"policy": "poly", "power": 0.9, "min_lr": 1e-4, "by_epoch": False}),
        (
            LR_COSINE,
            {
                "policy": "CosineAnnealing",
                "warmup": "linear",
                "warmup_iters": 1000,
                "warmup_ratio": pytest.approx(0.1),
                "min_lr_ratio": 1e-5,
            },
        ),
        (LR_CYCLIC, {"policy": "cyclic", "target_ratio": [10, 1e-4], "cyclic_times": 1, "step_ratio_up": 0.4}),
    ],
    ids=["step", "poly", "cosine", "cyclic"],
)
def test_seed_lr_config_examples(tmp_path, source, lr_config):
    recipe, skipped = convert(write(tmp_path / "c.py", source))
    assert recipe["lr_config"] == lr_config
    assert skipped == []
    if "momentum_config" in source:
        assert recipe["momentum_config"]["target_ratio"] == [pytest.approx(0.85 / 0.95), 1]


def test_values_without_an_equivalent_are_listed_not_dropped(tmp_path):
    source = (
        "model = dict(type='RetinaNet')\n"
        "train_pipeline = [dict(type='LoadImageFromFile')]\n"
        "data = dict(samples_per_gpu=2, train=dict(pipeline=train_pipeline))\n"
        "total_epochs = 12\n"
        "optimizer_config = dict(type='Fp16OptimizerHook', loss_scale=512.0, grad_clip=None)\n"
        "log_config = dict(interval=10, hooks=[dict(type='PaviLoggerHook'), "
        "dict(type='TensorboardLoggerHook', log_dir='tb')])\n"
        "evaluation = dict(interval=1, metric=['bbox', 'segm'], classwise=True)\n"
        "custom_hooks = [dict(type='NumClassCheckHook'), dict(type='EMAHook', momentum=0.0002)]\n"
        "checkpoint_config = dict(interval=-1)\n"
        "load_from = 'https://download.openmmlab.com/x.pth'\n"
        "lr_config = dict(policy='Unknown')\n"
        "my_setting = 3\n"
    )
    recipe, skipped = convert(write(tmp_path / "c.py", source))
    assert recipe["runner"] == {"type": "EpochBasedRunner", "max_epochs": 12}
    assert recipe["accelerate"] == {"mixed_precision": "fp16"}
    assert recipe["log_config"] == {"interval": 10, "hooks": [{"type": "TensorboardLoggerHook"}]}
    assert recipe["evaluation"] == {"interval": 1, "metric": "bbox"}
    assert recipe["custom_hooks"] == [{"type": "NumClassCheckHook"}]
    assert "lr_config" not in recipe and "load_from" not in recipe and "checkpoint_config" not in recipe
    listed = {s.key: (s.origin.line, s.reason) for s in skipped}
    expected_lines = {
        "model": 1,
        "train_pipeline": 2,
        "data": 3,
        "optimizer_config.loss_scale": 5,
        "log_config.hooks[0]": 6,
        "log_config.hooks[1].log_dir": 6,
        "evaluation.classwise": 7,
        "evaluation.metric": 7,
        "custom_hooks[1]": 8,
        "checkpoint_config.interval": 9,
        "load_from": 10,
        "lr_config": 11,
        "my_setting": 12,
    }
    assert {key: line for key, (line, _) in listed.items()} == expected_lines
    assert "custom_hooks[1].type = 'EMAHook'" in listed["custom_hooks[1]"][1]
    assert "lr_config.policy" in listed["lr_config"][1]
    assert "URLs are not downloaded" in listed["load_from"][1]


def test_cli_writes_a_recipe_that_validates_with_model_and_data(adamw_config, tmp_path, capsys):
    out = tmp_path / "out" / "runtime.toml"
    assert main(["import-mmcv", str(adamw_config), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"default_runtime.py:{line_of(DEFAULT_RUNTIME, 'dist_params')}  dist_params" in err
    text = out.read_text()
    assert "#   " in text and "opencv_num_threads" in text.split("\n\n")[0]
    assert tomllib.loads(text)["optimizer"]["type"] == "AdamW"
    user = write_recipe(tmp_path / "out", MODEL_DATA, name="user.toml")
    recipe = load_recipe(user)
    assert recipe.optimizer["paramwise_cfg"]["custom_keys"]["backbone"]["lr_mult"] == 0.1
    assert recipe.to_dict()["optimizer_config"]["grad_clip"] == {"max_norm": 0.1, "norm_type": 2}
    assert recipe.runner.max_epochs == 150 and recipe.checkpoint_config.interval == 20
    assert main([str(user), "--print-recipe"]) == 0
    assert tomllib.loads(capsys.readouterr().out)["evaluation"]["metric"] == "bbox"


def test_cli_prints_to_stdout_without_out(tmp_path, capsys):
    config = write(tmp_path / "c.py", LR_POLY + "runner = dict(type='IterBasedRunner', max_iters=100)\n")
    assert main(["import-mmcv", str(config)]) == 0
    printed = tomllib.loads(capsys.readouterr().out)
    assert printed == {
        "lr_config": {"policy": "poly", "power": 0.9, "min_lr": 1e-4, "by_epoch": False},
        "runner": {"type": "IterBasedRunner", "max_iters": 100},
    }


@pytest.mark.parametrize(
    "source, message",
    [
        ("optimizer = dict(\n    type='SGD',\n", "c.py:1: invalid Python"),
        (None, "mmcv config not found"),
    ],
    ids=["syntax-error", "missing-file"],
)
def test_cli_user_errors_exit_2(tmp_path, capsys, source, message):
    config = tmp_path / "c.py"
    if source is not None:
        write(config, source)
    assert main(["import-mmcv", str(config)]) == 2
    captured = capsys.readouterr()
    assert message in captured.err and "Traceback" not in captured.err
    assert captured.out == ""


def test_cli_refuses_code_without_running_it(tmp_path):
    marker = tmp_path / "ran"
    config = write(
        tmp_path / "evil.py", f"optimizer = dict(type='SGD', lr=__import__('os').system('touch {marker}'))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "accel_trainer", "import-mmcv", str(config)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "evil.py:1:" in proc.stderr and "Traceback" not in proc.stderr
    assert not marker.exists()


def test_weight_paths_are_kept_for_the_machine_that_trains(tmp_path):
    source = "load_from = 'checkpoints/faster_rcnn_r50_fpn_1x.pth'\nresume_from = None\n"
    recipe, skipped = convert(write(tmp_path / "c.py", source))
    assert recipe["load_from"] == "checkpoints/faster_rcnn_r50_fpn_1x.pth"
    assert "resume_from" not in recipe and skipped == []
