"""The checkpoint policy of one run: when to save, under which name, what to keep, what to resume.

`checkpoint.py` owns the folder format (write, verify, read); this module decides which folders
exist. The trainer's loop only calls it; hooks reach it as `trainer.checkpointer`.

Saving is asynchronous: the loop waits only while the tensors are copied to host memory; a
background thread writes, hashes, fsyncs and renames the folder, moves `latest`, then prunes.
The next save, a resume, the end of the run and a preemption wait for it first (`wait`), so at
most one checkpoint is in flight and a crash meanwhile leaves the previous one as `latest`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from accelerate.utils import broadcast_object_list

from . import checkpoint, weights
from .checkpoint import CheckpointError
from .classes import dataset_classes
from .errors import RecipeError
from .optim import load_optimizer_state
from .recipe.reading import dump_toml, recipe_changes, tomllib

if TYPE_CHECKING:
    from .trainer import Trainer

logger = logging.getLogger(__name__)

# trainer_state.json fields resume reads, and their types.
STATE_FIELDS: dict[str, type | tuple[type, ...]] = {
    "epoch": int,
    "iter": int,
    "inner_iter": int,
    "by_epoch": bool,
    "best": dict,
    "scaler": (dict, type(None)),
}


class Checkpointer:
    """Saves, prunes and restores the checkpoints of `trainer` as its recipe's `checkpoint_config` says."""

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer
        cfg = trainer.recipe.checkpoint_config
        self.interval = cfg.interval
        self.by_epoch = trainer.recipe.by_epoch if cfg.by_epoch is None else cfg.by_epoch
        self.save_optimizer = cfg.save_optimizer
        self.max_keep_ckpts = cfg.max_keep_ckpts
        self.save_last = cfg.save_last
        self.best: dict[str, Any] = {}
        self.last = ""  # the folder `latest` names: never pruned
        self._writer: ThreadPoolExecutor | None = None
        self._pending: Future | None = None
        self._staging: dict[str, dict[str, torch.Tensor]] = {}  # host buffers reused from save to save

    @property
    def root(self) -> Path:
        out_dir = self.trainer.recipe.checkpoint_config.out_dir
        work_dir = self.trainer.work_dir
        return (Path(out_dir) / work_dir.name if out_dir else work_dir) / "checkpoints"

    def protected(self) -> set[str]:
        return {name for name in (self.best.get("name"), self.last) if name}

    # ----------------------------------------------------------------- when and which name

    def after_train_epoch(self) -> None:
        t = self.trainer
        last = self.save_last and t.epoch == t.max_epochs
        if self.by_epoch and ((self.interval > 0 and t.epoch % self.interval == 0) or last):
            self._save_numbered(f"epoch_{t.epoch}")

    def after_train_iter(self) -> None:
        t = self.trainer
        last = self.save_last and t.iter == t.max_iters
        if not self.by_epoch and ((self.interval > 0 and t.iter % self.interval == 0) or last):
            self._save_numbered(f"iter_{t.iter}")

    def _save_numbered(self, name: str) -> None:
        """An interval checkpoint, then mmcv's max_keep_ckpts pruning of its kind."""
        prune = None
        if self.max_keep_ckpts > 0:
            prefix, keep, protect = "epoch" if self.by_epoch else "iter", self.max_keep_ckpts, {name, *self.protected()}

            def prune() -> None:
                checkpoint.prune_checkpoints(self.root, prefix, keep, protect=protect)

        self.save(name, save_optimizer=self.save_optimizer, then=prune)

    def save_best(self, key: str, value: float) -> None:
        """`best_<key>_epoch_N` (or `_iter_N`), weights only, replacing the previous best folder."""
        t = self.trainer
        where = f"epoch_{t.epoch}" if t.by_epoch else f"iter_{t.iter}"
        previous = self.best.get("name")
        self.best = {"key": key, "value": value, "name": f"best_{key}_{where}"}
        remove = None
        if previous and previous != self.best["name"]:

            def remove() -> None:
                checkpoint.remove_checkpoint(self.root, previous)

        self.save(self.best["name"], save_optimizer=False, update_latest=False, then=remove)
        logger.info("best %s = %.4f so far: saving %s", key, value, self.best["name"])

    # ----------------------------------------------------------------- writing

    def state(self) -> dict[str, Any]:
        """The trainer-state dict stored as `trainer_state.json`."""
        t = self.trainer
        return {
            "epoch": t.epoch,
            "iter": t.iter,
            # At an epoch's end the next run starts a fresh epoch, not the tail of this one.
            "inner_iter": t.inner_iter if t.mid_epoch else 0,
            "by_epoch": t.by_epoch,
            "best": self.best,
            "num_processes": t.accelerator.num_processes,
            "train_batch_size": t.train_batch_size,
            "scaler": t.accelerator.scaler.state_dict() if t.accelerator.scaler else None,
            "classes": dataset_classes(t.val_dataset),
            "versions": {"accel_trainer": __import__("accel_trainer").__version__, "torch": torch.__version__},
        }

    def save(
        self,
        name: str,
        *,
        save_optimizer: bool = True,
        update_latest: bool = True,
        then: Callable[[], None] | None = None,
    ) -> None:
        """Start writing a complete checkpoint (main process); `then` runs after it is in place.

        The previous save is finished first. Non-finite weights are refused before anything is
        written (every process holds the same weights, so all refuse together); a failed write
        is reported by every process alike, at the next `wait`.
        """
        t = self.trainer
        self.wait()
        model_state = t.unwrapped_model.state_dict()
        extra = {k: v for hook in t.hooks for k, v in hook.checkpoint_tensors(t).items()}
        _refuse_non_finite(self.root / name, {"model": model_state, **extra})
        if t.accelerator.is_main_process:
            files = checkpoint.prepare_checkpoint(
                name,
                model_state=model_state,
                trainer_state=self.state(),
                recipe_text=dump_toml(t.recipe.to_dict()),
                optimizer=t.optimizer.optimizer if save_optimizer else None,
                extra_tensors=extra,
                staging=self._staging,
            )
            if self._writer is None:
                self._writer = ThreadPoolExecutor(1, thread_name_prefix="checkpoint")
            self._pending = self._writer.submit(self._write, name, files, update_latest, then)
        if update_latest:
            self.last = name

    def _write(self, name: str, files: checkpoint.Files, update_latest: bool, then: Callable[[], None] | None) -> None:
        path = checkpoint.write_checkpoint(self.root, name, files, update_latest=update_latest)
        logger.info("saved checkpoint %s", path)
        if then is not None:
            then()

    def wait(self) -> None:
        """Finish the checkpoint in flight, if any; every process raises its error alike.

        Every process calls it at the same points (it is a collective under DDP)."""
        t = self.trainer
        error = [""]
        if self._pending is not None:
            try:
                self._pending.result()
            except CheckpointError as e:
                error[0] = str(e)
            finally:
                self._pending = None
        if t.accelerator.num_processes > 1:
            broadcast_object_list(error)  # also the barrier: nobody reads a checkpoint still being written
        if error[0]:
            raise CheckpointError(error[0])

    # ----------------------------------------------------------------- reading

    def find_resumable(self) -> Path | None:
        """The newest checkpoint that verifies and holds optimizer state (`best_*` folders do not)."""
        self.wait()
        return checkpoint.find_resumable(self.root, need_optimizer=True)

    def resume(self, path: str | Path | None = None) -> None:
        """Continue from a checkpoint: weights, optimizer state, counters, best metric and RNG.

        `None` picks the newest resumable checkpoint in `work_dir`; `"auto"` does too, but starts
        fresh when there is none (what a requeued job passes every time). The param groups'
        hyperparameters (lr, momentum) come from the recipe, so a changed lr is honoured.
        """
        t = self.trainer
        if path is None or path == "auto":
            found = self.find_resumable()
            if found is None and path == "auto":
                logger.info("--resume auto: no resumable checkpoint under %s; starting fresh", self.root)
                return
            if found is None:
                raise RecipeError(f"--resume: no complete checkpoint under {self.root}")
            path = found
        ckpt = checkpoint.load_checkpoint(Path(path))
        t.weights_replaced()
        state = _checked_state(ckpt.trainer_state, Path(path) / checkpoint.TRAINER_STATE)
        t.unwrapped_model.load_state_dict(ckpt.model_state)
        for hook in t.hooks:
            hook.load_checkpoint_tensors(t, ckpt.extra_tensors)
        if ckpt.optimizer_state is None:
            raise RecipeError(
                f"{path}: saved without optimizer state (save_optimizer = false); use --load-from for weights"
            )
        try:
            load_optimizer_state(t.optimizer.optimizer, ckpt.optimizer_state)
        except (KeyError, ValueError, TypeError, IndexError, RuntimeError) as e:
            raise CheckpointError(
                f"{Path(path) / checkpoint.OPTIMIZER_JSON}: does not fit this optimizer ({e})"
            ) from None
        if state["by_epoch"] != t.by_epoch:
            raise RecipeError(
                f"{path}: saved by an {'epoch' if state['by_epoch'] else 'iteration'}-based run; runner.type differs"
            )
        t.epoch, t.iter, t.resume_inner_iter = state["epoch"], state["iter"], state["inner_iter"]
        self.best = state.get("best") or {}
        if t.accelerator.scaler is not None and state.get("scaler"):
            t.accelerator.scaler.load_state_dict(state["scaler"])
        changes = recipe_changes(tomllib.loads(ckpt.recipe_text), t.recipe.to_dict())
        if changes:
            logger.warning("the recipe changed since %s was saved:\n%s", path, "\n".join(changes))
        checkpoint.restore_rng_state(*ckpt.rng)
        self.last = Path(path).name
        logger.info("resumed from %s at epoch %d, iter %d", path, t.epoch, t.iter)

    def load_weights(self, path: str | Path) -> None:
        """Whole-model weights (`load_from`): no optimizer state, no counters."""
        opts = self.trainer.recipe.load_options
        weights.fit_weights(
            self.trainer.unwrapped_model,
            weights.load_weights(path),
            source=path,
            revise_keys=opts.key_renames,
            strict=opts.strict,
        )
        self.trainer.weights_replaced()
        logger.info("loaded weights from %s", path)


def _checked_state(state: Any, where: Path) -> dict[str, Any]:
    """trainer_state.json with every field resume reads present and of the right type."""
    if not isinstance(state, dict):
        raise CheckpointError(f"{where}: expected a JSON object")
    for key, types in STATE_FIELDS.items():
        if key not in state:
            raise CheckpointError(f"{where}: field {key!r} is missing")
        value = state[key]
        if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
            value = None  # JSON true is not an integer here
        if not isinstance(value, types):
            expected = " or ".join(t.__name__ for t in (types if isinstance(types, tuple) else (types,)))
            raise CheckpointError(f"{where}: field {key!r} = {state[key]!r}: expected {expected}")
    if min(state["epoch"], state["iter"], state["inner_iter"]) < 0:
        raise CheckpointError(f"{where}: fields 'epoch', 'iter', 'inner_iter' must be >= 0")
    return state


def _refuse_non_finite(where: Path, groups: dict[str, dict[str, torch.Tensor]]) -> None:
    """A checkpoint of NaN or inf weights is worse than none: refuse it, naming what is broken."""
    for group, tensors in groups.items():
        floats = [(k, v) for k, v in tensors.items() if v.is_floating_point()]
        if not floats:
            continue
        finite = torch.stack([torch.isfinite(v).all() for _, v in floats]).tolist()
        bad = [k for (k, _), ok in zip(floats, finite) if not ok]
        if bad:
            raise RecipeError(
                f"{where}: not written: {len(bad)} of {len(floats)} {group} tensors are not finite "
                f"(e.g. {bad[0]}); earlier checkpoints are untouched (see [nan_guard])"
            )
