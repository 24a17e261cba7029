from __future__ import annotations

import os
import subprocess
import sys

import pytest

from .helpers import REPO


def run_cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "accel_trainer", *args], capture_output=True, text=True, cwd=cwd or REPO, timeout=300
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["--set", "optimizer.lrr=0.1"], "optimizer.lrr"),
        (["--set", "data.train.root=/x"], "strings need quotes"),
        (["--set", "runner.max_epochs=-1"], "runner.max_epochs = -1 must be > 0"),
        (["--set", 'lr_config.policy="Cosine"'], "lr_config.policy"),
        (["--print-recipe", "--set", "optimizer.betas=[0.9]"], "optimizer.betas = [0.9]: AdamW takes a list of 2"),
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


def test_version_names_the_package_and_what_it_runs_on():
    from accel_trainer import __version__

    proc = run_cli("--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"accel-trainer {__version__} (torch ")
    assert "accelerate " in proc.stdout and "timm " in proc.stdout


def test_data_paths_are_checked_before_training_but_not_for_printing_or_the_schedule(tmp_path):
    recipe = tmp_path / "coco.toml"
    recipe.write_text(
        f'_base_ = ["{REPO / "recipes" / "det.toml"}"]\n'
        '[data]\ntype = "coco"\n'
        '[data.train]\nroot = "/nonexistent/train2017"\nann_file = "/nonexistent/train.json"\n'
        '[data.val]\nroot = "/nonexistent/val2017"\nann_file = "/nonexistent/val.json"\n'
    )
    train = run_cli(str(recipe), "--work-dir", str(tmp_path / "work"))
    assert train.returncode == 2 and "Traceback" not in train.stderr
    assert "data.train.root: folder not found: /nonexistent/train2017" in train.stderr
    assert not (tmp_path / "work").exists()  # stopped before anything was built or written
    printed = run_cli(str(recipe), "--print-recipe")
    assert printed.returncode == 0 and 'ann_file = "/nonexistent/val.json"' in printed.stdout
    schedule = run_cli("schedule", str(recipe), "--iters-per-epoch", "4", "--csv", str(tmp_path / "s.csv"))
    assert schedule.returncode == 0, schedule.stderr
    assert (tmp_path / "s.csv").read_text().startswith("iter,epoch,lr,momentum\n")
    needs_data = run_cli("schedule", str(recipe))
    assert needs_data.returncode == 2 and "folder not found: /nonexistent/train2017" in needs_data.stderr


def test_missing_coco_annotation_file_is_named(tmp_path):
    (tmp_path / "images").mkdir()
    recipe = tmp_path / "coco.toml"
    recipe.write_text(
        f'_base_ = ["{REPO / "recipes" / "det.toml"}"]\n'
        '[data]\ntype = "coco"\n'
        f'[data.train]\nroot = "{tmp_path / "images"}"\nann_file = "{tmp_path / "missing.json"}"\n'
        f'[data.val]\nroot = "{tmp_path / "images"}"\nann_file = "{tmp_path / "missing.json"}"\n'
    )
    proc = run_cli(str(recipe), "--work-dir", str(tmp_path / "work"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"data.train.ann_file: file not found: {tmp_path / 'missing.json'}" in proc.stderr


def test_recipe_tools_import_no_hook_module_but_a_run_does(tiny_recipe, tmp_path):
    """A recipe is code only when it runs: printing, previewing and importing never import hook modules."""
    marker = tmp_path / "imported"
    (tmp_path / "side_effect_hooks.py").write_text(
        f"open({str(marker)!r}, 'a').write('x')\nfrom accel_trainer import Hook\nclass Noisy(Hook):\n    pass\n"
    )
    hook = '--set=custom_hooks=[{type = "side_effect_hooks:Noisy"}]'
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    mmcv_config = tmp_path / "cfg.py"
    mmcv_config.write_text("custom_hooks = [dict(type='side_effect_hooks:Noisy')]\n")
    tools = [
        [str(tiny_recipe), "--print-recipe", hook],
        ["schedule", str(tiny_recipe), "--iters-per-epoch", "2", "--num-processes", "1", "--csv", os.devnull, hook],
        ["import-mmcv", str(mmcv_config), "--out", str(tmp_path / "out.toml")],
    ]
    for args in tools:
        proc = subprocess.run([sys.executable, "-m", "accel_trainer", *args], capture_output=True, text=True, env=env)
        assert proc.returncode == 0, proc.stderr
        assert not marker.exists(), f"{args[0]} imported the hook module"
    code = (
        "from accel_trainer import Trainer\n"
        f"Trainer.from_recipe({str(tiny_recipe)!r}, overrides={{'custom_hooks': [{{'type': 'side_effect_hooks:Noisy'}}]}})\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=env, capture_output=True)
    assert marker.read_text() == "x", "building a Trainer must import the hook module once"


def test_help_imports_no_torch():
    """Every command's parser is built without torch: the heavy imports wait for `run`."""
    code = (
        "import contextlib, io, sys\n"
        "from accel_trainer.cli import COMMANDS, main\n"
        "for argv in [['--help'], *([name, '--help'] for name in COMMANDS)]:\n"
        "    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "        main(argv)\n"
        "print(sorted(name for name in ('torch', 'torchvision', 'timm', 'accelerate') if name in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "[]\n"


def test_checking_a_recipe_imports_no_compiler_model_zoo_or_image_library(tiny_recipe):
    """`--print-recipe` and `schedule` cost about an `import torch`: torch._dynamo (which torch's
    optimizer constructor imports on its first call), timm, torchvision and Pillow stay unloaded."""
    code = (
        "import os, sys\n"
        "from accel_trainer.cli import main\n"
        f"assert main([{str(tiny_recipe)!r}, '--print-recipe']) == 0\n"
        f"assert main(['schedule', {str(tiny_recipe)!r}, '--iters-per-epoch', '2', '--num-processes', '1',"
        " '--csv', os.devnull]) == 0\n"
        "heavy = ('torch._dynamo', 'timm', 'torchvision', 'PIL')\n"
        "print(sorted(name for name in heavy if name in sys.modules), file=sys.stderr)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines()[-1] == "[]", proc.stderr


def test_a_folder_that_cannot_be_written_is_one_line_wherever_it_is_met(monkeypatch, capsys):
    import errno

    from accel_trainer.cli import main
    from accel_trainer.commands import schedule

    def read_only_mount(args):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), "/mnt/ro/out.png")

    monkeypatch.setattr(schedule, "run", read_only_mount)
    assert main(["schedule", "x.toml"]) == 2
    assert capsys.readouterr().err == "accel-trainer: error: /mnt/ro/out.png: not writable (read-only file system)\n"
