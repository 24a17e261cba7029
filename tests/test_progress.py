"""Progress bars: drawn on a terminal (a pseudo-terminal here), absent from the `.log` files and
from output that is not a terminal."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios

from accel_trainer import load_recipe
from accel_trainer.hooks import build_hooks
from accel_trainer.hooks.progress import TrainProgressHook, ValProgressHook

from .helpers import REPO


def run_in_pty(args: list[str]) -> str:
    """Run a command with stdout and stderr on a pseudo-terminal; return everything it drew."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # a 120-column terminal
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(args, stdout=slave, stderr=slave, stdin=subprocess.DEVNULL, env=env, cwd=REPO)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # the terminal closes when the process exits
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait(timeout=300) == 0, b"".join(chunks).decode(errors="replace")
    return b"".join(chunks).decode(errors="replace")


def test_bars_on_a_terminal_and_not_in_the_log(tiny_recipe):
    drawn = run_in_pty([sys.executable, "-m", "accel_trainer", str(tiny_recipe), "--set", "runner.max_epochs=1"])
    work_dir = tiny_recipe.parent / "work"
    (log,) = work_dir.glob("*.log")
    text = log.read_text()
    # The train bar: epoch, iterations of the total, rate, ETA and the smoothed loss.
    assert "Epoch 1/1" in drawn and "8/8" in drawn and "it/s" in drawn and "loss=" in drawn, drawn
    assert "img/s" in drawn and "val" in drawn, drawn  # the val bar counts images
    # Log lines still reach the terminal, drawn above the bars, exactly as the file has them.
    line = next(line for line in text.splitlines() if "Epoch(val) [1]" in line)
    assert line in drawn.replace("\r\n", "\n")
    assert "\r" not in text and "it/s" not in text and "%|" not in text


def test_no_bars_unless_stdout_is_a_terminal_or_asked_for(tiny_recipe):
    recipe = load_recipe(tiny_recipe)
    bar_hooks = (TrainProgressHook, ValProgressHook)
    assert not sys.stdout.isatty()  # pytest captures stdout
    specs = recipe.specs.hooks, recipe.specs.schedule
    assert not [h for h in build_hooks(recipe, *specs) if isinstance(h, bar_hooks)]
    assert len([h for h in build_hooks(recipe, *specs, progress=True) if isinstance(h, bar_hooks)]) == 2
    assert not [h for h in build_hooks(recipe, *specs, progress=False) if isinstance(h, bar_hooks)]
