from __future__ import annotations

import subprocess
import sys

import pytest

from .conftest import REPO, write_recipe


def run_cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "accel_trainer", *args], capture_output=True, text=True, cwd=cwd or REPO, timeout=300
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["--set", "optimizer.lrr=0.1"], 'optimizer.lrr'),
        (["--set", "data.train.root=/x"], "strings need quotes"),
        (["--set", "runner.max_epochs=-1"], "runner.max_epochs = -1 must be > 0"),
        (["--set", "lr_config.policy=\"Cosine\""], "lr_config.policy"),
    ],
)
def test_user_errors_exit_2_without_traceback(tiny_recipe, args, message):
    proc = run_cli(str(tiny_recipe), *args)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_recipe_file(tmp_path):
    proc = run_cli(str(tmp_path / "nope.toml"))
    assert proc.returncode == 2 and "recipe file not found" in proc.stderr and "Traceback" not in proc.stderr


def test_print_recipe_round_trip(tiny_recipe, tmp_path):
    first = run_cli(str(tiny_recipe), "--print-recipe", "--set", "optimizer.lr=0.02")
    assert first.returncode == 0, first.stderr
    assert "lr = 0.02" in first.stdout
    resolved = tmp_path / "resolved.toml"
    resolved.write_text(first.stdout)
    second = run_cli(str(resolved), "--print-recipe")
    assert second.stdout == first.stdout


def test_help_documents_flags():
    proc = run_cli("--help")
    assert proc.returncode == 0
    for flag in ("--set", "--work-dir", "--print-recipe", "schedule"):
        assert flag in proc.stdout
