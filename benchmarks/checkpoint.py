"""Checkpoint speed: our safetensors checkpoints vs torch.save / torch.load of the same training state.

State: timm resnest50d (random init) + SGD(momentum=0.9) after one step on a tiny batch.
Ours: what the training loop waits for (prepare_checkpoint with host copies; the rest runs in a
background thread during training), the whole write (temp folder, sha256 of every file, fsync,
rename, `latest`), and load_checkpoint(verify=True) (sha256 of every file checked, files in parallel). Baseline: torch.save of
{"model": state_dict, "optimizer": state_dict} (no fsync) and torch.load(weights_only=True).
Medians over --repeats runs, all in one temp folder; loads read from the page cache on both sides.
The last row adds model/optimizer load_state_dict into fresh objects. Our tensors are
memory-mapped (copy-on-write), so pages are faulted in there and on the first write.

    python benchmarks/checkpoint.py [--repeats 5] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import timm
import torch

from accel_trainer.checkpoint.format import capture_rng_state, load_checkpoint, prepare_checkpoint, write_checkpoint


def build() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = timm.create_model("resnest50d", pretrained=False)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    model(torch.randn(2, 3, 64, 64)).logsumexp(1).mean().backward()
    optimizer.step()
    return model, optimizer


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def resume(model: torch.nn.Module, optimizer: torch.optim.Optimizer, model_state: dict, optimizer_state: dict) -> None:
    """What a resume does with the loaded state."""
    model.load_state_dict(model_state)
    optimizer.load_state_dict(optimizer_state)


def fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dir", default=None, help="where the temp folder goes (default: the system temp dir)")
    args = parser.parse_args()

    model, optimizer = build()
    fresh_model, fresh_opt = build()
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict()}
    size = sum(t.numel() * t.element_size() for t in state["model"].values())
    size += sum(t.numel() * t.element_size() for s in state["optimizer"]["state"].values() for t in s.values())
    times: dict[str, list[float]] = {}

    def record(key: str, seconds: float) -> None:
        times.setdefault(key, []).append(seconds)

    staging: dict = {}  # reused from save to save, as the Checkpointer does

    def one_round(root: Path, i: int) -> None:
        pt = root / f"torch_{i}.pt"
        record("torch_save", timed(lambda: torch.save(state, pt))[0])
        record("torch_fsync", timed(lambda: fsync(pt))[0])
        blocked, files = timed(
            lambda: prepare_checkpoint(
                f"iter_{i}",
                model_state=state["model"],
                trainer_state={"iter": i},
                recipe_text="",
                optimizer_state=optimizer.state_dict(),
                rng_state=capture_rng_state(),
                staging=staging,
            )
        )
        record("our_blocked", blocked)
        written = timed(lambda: write_checkpoint(root / "ckpts", f"iter_{i}", files))
        record("our_save", blocked + written[0])
        seconds, loaded = timed(lambda: torch.load(pt, map_location="cpu", weights_only=True))
        record("torch_load", seconds)
        apply = timed(lambda: resume(fresh_model, fresh_opt, loaded["model"], loaded["optimizer"]))[0]
        record("torch_apply", seconds + apply)
        seconds, ckpt = timed(lambda: load_checkpoint(written[1]))
        record("our_load", seconds)
        apply = timed(lambda: resume(fresh_model, fresh_opt, ckpt.model_state, ckpt.optimizer_state))[0]
        record("our_apply", seconds + apply)
        pt.unlink()
        shutil.rmtree(written[1])

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        one_round(Path(tmp), -1)  # warm-up: the staging buffers are allocated by a run's first save
        times.clear()
        for i in range(args.repeats):
            one_round(Path(tmp), i)

    med = {k: statistics.median(v) for k, v in times.items()}
    rows = [
        ("save: loop blocked (async)", med["our_blocked"], med["torch_save"]),
        ("save: whole write", med["our_save"], med["torch_save"]),
        ("save (torch.save + fsync)", med["our_save"], med["torch_save"] + med["torch_fsync"]),
        ("load, sha256 verified", med["our_load"], med["torch_load"]),
        ("load + load_state_dict", med["our_apply"], med["torch_apply"]),
    ]
    print(
        f"resnest50d + SGD momentum: {size / 1e6:.0f} MB of tensors, median of {args.repeats}, "
        f"{os.cpu_count()} CPUs, torch {torch.__version__}"
    )
    print(f"{'':28s}{'ours (s)':>10s}{'torch (s)':>11s}{'ratio':>8s}")
    for label, ours_s, torch_s in rows:
        print(f"{label:28s}{ours_s:10.3f}{torch_s:11.3f}{ours_s / torch_s:8.2f}")


if __name__ == "__main__":
    main()
