from __future__ import annotations

import logging
import os
from datetime import timedelta

import psutil
import pytest
import timm
import torch
from timm.layers import BatchNormAct2d, SyncBatchNormAct
from torch import nn
from torch.distributed.rendezvous import rendezvous

from accel_trainer.distributed import (
    LAUNCHER_VARS,
    configure_cpu_threads,
    launched_without_accelerator,
    maybe_sync_batchnorm,
    process_group_kwargs,
)

GPU = torch.device("cuda")  # only its type is read; nothing is moved


def _bn_types(model: nn.Module) -> set[type]:
    return {type(m) for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}


def test_sync_bn_converts_every_batchnorm_with_several_gpu_processes():
    model = timm.create_model("resnet10t", num_classes=4)
    weight = model.bn1.weight
    converted = maybe_sync_batchnorm(model, True, 2, GPU)
    assert _bn_types(converted) == {nn.SyncBatchNorm}
    assert converted.bn1.weight is weight  # the optimizer built afterwards sees the same parameters
    assert converted(torch.randn(2, 3, 32, 32)).shape == (2, 4)  # no process group: plain BatchNorm maths


def test_sync_bn_keeps_timm_norm_act_activation():
    model = nn.Sequential(BatchNormAct2d(8, act_layer=nn.ReLU))
    converted = maybe_sync_batchnorm(model, True, 4, GPU)
    assert isinstance(converted[0], SyncBatchNormAct) and isinstance(converted[0].act, nn.ReLU)


def test_sync_bn_is_skipped_when_off_single_process_or_cpu(caplog):
    model = timm.create_model("resnet10t", num_classes=4)
    assert _bn_types(maybe_sync_batchnorm(model, False, 8, GPU)) == {nn.BatchNorm2d}
    assert _bn_types(maybe_sync_batchnorm(model, True, 1, GPU)) == {nn.BatchNorm2d}
    with caplog.at_level(logging.WARNING, logger="accel_trainer"):
        assert _bn_types(maybe_sync_batchnorm(model, True, 2, torch.device("cpu"))) == {nn.BatchNorm2d}
    assert "keeping per-process BatchNorm on cpu" in caplog.text


def test_launched_without_accelerator_reads_world_size(monkeypatch):
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert launched_without_accelerator()
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert not launched_without_accelerator()
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: True)
    assert not launched_without_accelerator()


ELASTIC_ENV = {"TORCHELASTIC_USE_AGENT_STORE": "True", "GROUP_WORLD_SIZE": "1", "TORCHELASTIC_RESTART_COUNT": "2"}


def test_each_restart_attempt_meets_under_its_own_store_prefix(monkeypatch):
    # The agent's store outlives attempts; keys written through the init_method land under the attempt.
    agent_store = torch.distributed.TCPStore("127.0.0.1", 0, is_master=True, timeout=timedelta(seconds=10))
    env = {**ELASTIC_ENV, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(agent_store.port)}
    for name, value in {**env, "RANK": "0", "WORLD_SIZE": "1"}.items():
        monkeypatch.setenv(name, value)
    url = process_group_kwargs()["init_method"]
    store, rank, world_size = next(rendezvous(url, timeout=timedelta(seconds=10)))
    store.set("address", "here")
    assert (rank, world_size) == (0, 1)
    assert agent_store.get("attempt_2/address") == b"here"


@pytest.mark.parametrize("unset", ["TORCHELASTIC_USE_AGENT_STORE", "TORCHELASTIC_RESTART_COUNT", "GROUP_WORLD_SIZE"])
def test_without_one_elastic_agent_the_process_group_keeps_torchs_rendezvous(monkeypatch, unset):
    for name, value in ELASTIC_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv(unset)
    assert process_group_kwargs() == {}
    monkeypatch.setenv(unset, ELASTIC_ENV[unset])
    monkeypatch.setenv("GROUP_WORLD_SIZE", "2")  # agents on several machines count restarts on their own
    assert process_group_kwargs() == {}


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_cpu_threads_replace_a_launchers_single_thread(monkeypatch, restore_threads):
    monkeypatch.setattr(psutil, "cpu_count", lambda logical=True: 8)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")  # set by accelerate launch in the processes it starts
    torch.set_num_threads(1)
    assert configure_cpu_threads(0, 1) == 8
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # two processes on this machine share its cores
    assert configure_cpu_threads(0, 4) == 4
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})  # a container allowed 2 CPUs
    assert configure_cpu_threads(0, 1) == 1


def test_cpu_threads_keep_an_explicit_choice(monkeypatch, restore_threads):
    monkeypatch.setattr(psutil, "cpu_count", lambda logical=True: 8)
    torch.set_num_threads(3)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert configure_cpu_threads(0, 1) == 3
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert configure_cpu_threads(0, 1) == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert configure_cpu_threads(2, 1) == 2  # the recipe's accelerate.cpu_threads wins


def test_a_users_single_thread_is_kept_without_a_launcher(monkeypatch, restore_threads):
    monkeypatch.setattr(psutil, "cpu_count", lambda logical=True: 8)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    for name in LAUNCHER_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # `OMP_NUM_THREADS=1 python -m accel_trainer ...`
    torch.set_num_threads(1)
    assert configure_cpu_threads(0, 1) == 1
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "x")  # torchrun's processes: its 1 is replaced
    assert configure_cpu_threads(0, 1) == 8
