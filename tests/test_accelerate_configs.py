"""The shipped `accelerate launch` configs load with Accelerate's own loader, and the CPU one runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file
from accelerate.utils import DistributedType

from accel_trainer import Trainer

from .helpers import REPO

CONFIGS = REPO / "accelerate_configs"


@pytest.mark.parametrize(
    "name, distributed_type, num_processes, num_machines, mixed_precision, use_cpu",
    [
        ("cpu.yaml", DistributedType.NO, 1, 1, "no", True),
        ("cpu_ddp.yaml", DistributedType.MULTI_GPU, 2, 1, "no", True),
        ("single_gpu.yaml", DistributedType.NO, 1, 1, "bf16", False),
        ("multi_gpu.yaml", DistributedType.MULTI_GPU, 8, 1, "bf16", False),
        ("multi_node.yaml", DistributedType.MULTI_GPU, 16, 2, "bf16", False),
    ],
)
def test_config_loads_with_accelerate(name, distributed_type, num_processes, num_machines, mixed_precision, use_cpu):
    config = load_config_from_file(str(CONFIGS / name))
    assert isinstance(config, ClusterConfig)
    assert config.distributed_type == distributed_type
    assert (config.num_processes, config.num_machines) == (num_processes, num_machines)
    assert config.mixed_precision == mixed_precision
    assert config.use_cpu is use_cpu


def test_multi_node_config_names_the_main_process():
    config = load_config_from_file(str(CONFIGS / "multi_node.yaml"))
    assert config.machine_rank == 0 and config.main_process_ip and config.main_process_port
    text = (CONFIGS / "multi_node.yaml").read_text()
    for key in ("machine_rank:", "main_process_ip:", "main_process_port:"):
        assert f"# {key}" in text, f"{key} is not explained"


def test_slurm_script_parses():
    script = REPO / "scripts/slurm_multinode.sh"
    proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    text = script.read_text()
    for needed in ("SLURM_NODEID", "SLURM_NNODES", "scontrol show hostnames", "-m accel_trainer"):
        assert needed in text


@pytest.mark.multiprocess
def test_cpu_ddp_config_runs_two_processes(tiny_recipe):
    env = {k: v for k, v in os.environ.items() if k != "ACCELERATE_USE_CPU"}
    env["OMP_NUM_THREADS"] = "1"
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(CONFIGS / "cpu_ddp.yaml"),
        "--main_process_port",
        "29621",
        "-m",
        "accel_trainer",
        str(tiny_recipe),
        "--set",
        "runner.max_epochs=1",
        "accelerate.sync_bn=true",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    work = tiny_recipe.parent / "work"
    log_text = next(work.glob("*.log")).read_text()
    assert "MULTI_CPU, 2 processes" in log_text
    assert "sync_bn: SyncBatchNorm needs" in log_text
    records = [json.loads(line) for line in next(work.glob("*.log.json")).read_text().splitlines()]
    # 128 images / (2 processes x 16) = 4 iterations; the 21 val images are counted once.
    assert [r["iter"] for r in records if r["mode"] == "train"] == [4]
    assert [r["num_samples"] for r in records if r["mode"] == "val"] == [21]


def test_launcher_mixed_precision_applies_unless_the_recipe_sets_one(tiny_recipe, monkeypatch):
    # `accelerate launch` passes the config file's mixed_precision in this variable.
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    assert Trainer.from_recipe(tiny_recipe).accelerator.mixed_precision == "bf16"
    assert Trainer.from_recipe(tiny_recipe, {"accelerate.mixed_precision": "no"}).accelerator.mixed_precision == "no"


def test_slurm_script_checkpoints_and_requeues_on_the_early_signal():
    text = (REPO / "scripts/slurm_multinode.sh").read_text()
    for needed in ("#SBATCH --signal=B:USR1@120", "#SBATCH --requeue", "scontrol requeue", "--resume auto"):
        assert needed in text


@pytest.mark.multiprocess
def test_multi_node_config_runs_as_two_machines_on_one_host(tiny_recipe):
    """Both machine ranks of multi_node.yaml on 127.0.0.1, one CPU process each: one gloo group of 2."""
    env = dict(os.environ, OMP_NUM_THREADS="1", ACCELERATE_USE_CPU="1")
    common = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(CONFIGS / "multi_node.yaml"),
        "--num_machines",
        "2",
        "--num_processes",
        "2",
        "--main_process_ip",
        "127.0.0.1",
        "--main_process_port",
        "29641",
        "--mixed_precision",
        "no",
    ]
    procs = [
        subprocess.Popen(
            [
                *common,
                "--machine_rank",
                str(rank),
                "-m",
                "accel_trainer",
                str(tiny_recipe),
                "--set",
                "runner.max_epochs=1",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=REPO,
        )
        for rank in (0, 1)
    ]
    outputs = [p.communicate(timeout=600) for p in procs]
    for proc, (_, err) in zip(procs, outputs):
        assert proc.returncode == 0, err[-3000:]
    work = tiny_recipe.parent / "work"
    assert "MULTI_CPU, 2 processes" in next(work.glob("*.log")).read_text()
    records = [json.loads(line) for line in next(work.glob("*.log.json")).read_text().splitlines()]
    assert [r["iter"] for r in records if r["mode"] == "train"] == [4]
    assert [r["num_samples"] for r in records if r["mode"] == "val"] == [21]
