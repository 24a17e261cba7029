"""Real two-process DDP on CPU (gloo) through `accelerate launch`."""

from __future__ import annotations

import json

import pytest

from .helpers.launch import launch


@pytest.mark.multiprocess
def test_two_process_ddp_counts_every_val_sample_once(tiny_recipe):
    proc = launch(tiny_recipe, "--set", "runner.max_epochs=1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    work = tiny_recipe.parent / "work"
    log_text = next(work.glob("*.log")).read_text()
    assert "MULTI_CPU, 2 processes" in log_text
    records = [json.loads(line) for line in next(work.glob("*.log.json")).read_text().splitlines()]
    val = [r for r in records if r["mode"] == "val"]
    assert len(val) == 1 and val[0]["num_samples"] == 21
    train = [r for r in records if r["mode"] == "train"]
    assert train[-1]["iter"] == 4
