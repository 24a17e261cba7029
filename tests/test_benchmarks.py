"""The GPU throughput benchmark keeps working: a tiny CPU run of both workloads."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from .helpers import REPO


def test_gpu_throughput_tiny_run_prints_a_full_table():
    cmd = [
        sys.executable,
        str(REPO / "benchmarks/gpu_throughput.py"),
        "--tiny",
        "--det",
        "--dtypes",
        "fp32",
        "fp16",
        "--compile",
        "off",
    ]
    out = subprocess.run(
        cmd, capture_output=True, text=True, timeout=300, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert out.returncode == 0, out.stderr
    rows = [
        line
        for line in out.stdout.splitlines()
        if re.match(r"(cls|det) .* fp32 +(on|off) +off +[\d.]+ +[\d.]+ +[\d.]+ +[\d.]+% +[\d.]+%$", line)
    ]
    assert len(rows) == 4, out.stdout
    assert out.stdout.count("skipped: fp16 AMP needs a GPU") == 4
    assert "GFLOP per training image" in out.stdout
