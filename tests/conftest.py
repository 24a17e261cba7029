"""Shared fixtures: tiny recipes on the built-in shapes data, cached once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .helpers.recipes import write_recipe

os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session", autouse=True)
def shapes_cache(tmp_path_factory) -> Path:
    """Generate the synthetic data once into a session folder shared by subprocesses."""
    cache = tmp_path_factory.mktemp("shapes_cache")
    os.environ["ACCEL_TRAINER_CACHE"] = str(cache)
    return cache


@pytest.fixture
def tiny_recipe(tmp_path) -> Path:
    return write_recipe(tmp_path)
