from __future__ import annotations

import pytest

from accel_trainer.commands.mmcv_config import Origin, read_mmcv_config
from accel_trainer.errors import RecipeError

from .helpers.mmcv_configs import DEFAULT_RUNTIME, line_of, write


def test_base_is_followed_relative_to_the_config(tmp_path):
    base = write(tmp_path / "_base_" / "default_runtime.py", DEFAULT_RUNTIME)
    child = write(
        tmp_path / "configs" / "det.py",
        "_base_ = [\n    '../_base_/default_runtime.py'\n]\ncheckpoint_config = dict(interval=20)\n",
    )
    values, origins = read_mmcv_config(child)
    assert values["checkpoint_config"] == {"interval": 20}
    assert values["workflow"] == [["train", 1]]
    assert values["log_config"]["hooks"] == [{"type": "TextLoggerHook"}]
    assert values["load_from"] is None
    assert "_base_" not in values
    assert origins["checkpoint_config"] == Origin(str(child), 4)
    assert origins["dist_params"] == Origin(str(base), line_of(DEFAULT_RUNTIME, "dist_params"))


def test_base_as_a_single_string(tmp_path):
    write(tmp_path / "base.py", "a = 1\nb = dict(x=1)\n")
    values, _ = read_mmcv_config(write(tmp_path / "child.py", "_base_ = 'base.py'\nb = dict(y=2)\n"))
    assert values == {"a": 1, "b": {"x": 1, "y": 2}}


def test_delete_replaces_the_inherited_table(tmp_path):
    write(
        tmp_path / "base.py",
        "optimizer = dict(type='SGD', lr=0.02, momentum=0.9, weight_decay=0.0001)\n"
        "optimizer_config = dict(grad_clip=None)\n",
    )
    merged = write(tmp_path / "merged.py", "_base_ = 'base.py'\noptimizer = dict(type='AdamW', lr=0.0001)\n")
    replaced = write(
        tmp_path / "replaced.py",
        "_base_ = 'base.py'\n"
        "optimizer = dict(_delete_=True, type='AdamW', lr=0.0001)\n"
        "optimizer_config = dict(\n    _delete_=True, grad_clip=dict(max_norm=35, norm_type=2))\n",
    )
    assert read_mmcv_config(merged)[0]["optimizer"]["momentum"] == 0.9
    values, _ = read_mmcv_config(replaced)
    assert values["optimizer"] == {"type": "AdamW", "lr": 0.0001}
    assert values["optimizer_config"] == {"grad_clip": {"max_norm": 35, "norm_type": 2}}


def test_literals_arithmetic_and_earlier_names(tmp_path):
    config = write(
        tmp_path / "c.py",
        '"""doc"""\n'
        "ratio = 1.0 / 10\n"
        "norm = dict(mean=[123.675, 116.28], to_rgb=True)\n"
        "target_ratio = (0.85 / 0.95, 1)\n"
        "x = dict(norm, a=-1, b=2 ** -2, c={'k': (1, 2), **norm}, d={3, 3, 4}, e='ab' + 'c', f=[1] + [2])\n"
        "y = list((1, 2))\n",
    )
    values, _ = read_mmcv_config(config)
    assert values["ratio"] == pytest.approx(0.1)
    assert values["target_ratio"] == [pytest.approx(0.85 / 0.95), 1]
    assert values["x"] == {
        "mean": [123.675, 116.28],
        "to_rgb": True,
        "a": -1,
        "b": 0.25,
        "c": {"k": [1, 2], "mean": [123.675, 116.28], "to_rgb": True},
        "d": [3, 4],
        "e": "abc",
        "f": [1, 2],
    }
    assert values["norm"] == {"mean": [123.675, 116.28], "to_rgb": True}
    assert values["y"] == [1, 2]


def test_code_in_a_config_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "ran"
    config = write(tmp_path / "evil.py", f"a = 1\nb = __import__('os').system('touch {marker}')\n")
    with pytest.raises(RecipeError, match=r"evil\.py:2: .*__import__"):
        read_mmcv_config(config)
    assert not marker.exists()


@pytest.mark.parametrize(
    "source, line, message",
    [
        ("import os\n", 1, "Import statements are not read"),
        ("a = 1\nb = os.path.join('a')\n", 2, "the only calls read are dict"),
        ("a = dict(b=c)\n", 1, "'c' is not assigned earlier"),
        ("a = [i for i in range(3)]\n", 1, "ListComp"),
        ("a = f'{1}'\n", 1, "JoinedStr"),
        ("a = 10 ** 400\nb = a * a\nc = b * b\nd = c * c\n", 3, "too large"),
        ("a = [0] * 10 ** 9\n", 1, "Mult of list and int"),
        # 10**9 items by sharing names, refused while each line holds ten references.
        (
            "".join(f"{name} = [{', '.join([part] * 10)}]\n" for part, name in zip("0abcdefgh", "abcdefghi")),
            6,
            "more than 1_000_000 items once written out",
        ),
        ("a0 = 1\n" + "".join(f"a{i + 1} = [a{i}]\n" for i in range(40)), 34, "nested more than 32 deep"),
        ("a, b = 1, 2\n", 1, "only plain names"),
        ("a = dict(\n", 1, "invalid Python"),
    ],
)
def test_unreadable_constructs_name_file_and_line(tmp_path, source, line, message):
    config = write(tmp_path / "c.py", source)
    with pytest.raises(RecipeError, match=rf"c\.py:{line}: .*{message}"):
        read_mmcv_config(config)


def test_missing_files_and_base_cycles(tmp_path):
    with pytest.raises(RecipeError, match="mmcv config not found"):
        read_mmcv_config(tmp_path / "nope.py")
    missing_base = write(tmp_path / "a.py", "_base_ = ['gone.py']\n")
    with pytest.raises(RecipeError, match=r"a\.py:1: _base_ file not found: gone\.py"):
        read_mmcv_config(missing_base)
    cycle = write(tmp_path / "self.py", "_base_ = 'self.py'\n")
    with pytest.raises(RecipeError, match="include each other"):
        read_mmcv_config(cycle)
