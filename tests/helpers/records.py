"""The JSON log a run writes, read back as records, since most end-to-end tests assert on it."""

from __future__ import annotations

import json
from pathlib import Path


def read_records(work_dir: Path) -> list[dict]:
    """Every record of the one `*.log.json` in `work_dir`, in order."""
    (log_json,) = sorted(Path(work_dir).glob("*.log.json"))
    return [json.loads(line) for line in log_json.read_text().splitlines()]
