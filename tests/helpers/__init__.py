"""Code the test modules share, so that no test module imports another; nothing here is a test."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
