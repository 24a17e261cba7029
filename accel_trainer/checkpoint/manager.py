"""The checkpoint policy of one run: when to save, under which name, what to keep, what to resume.

`format.py` owns the folder format (write, verify, read); this module decides which folders
exist and what goes in them. It is given the run's stateful parts by name (see `state.py`) and
knows nothing else of the trainer: the loop calls it at the end of each iteration and epoch,
`SaveBestHook` for the best one, the step guard to roll back and on preemption.

Where each part goes in a folder:

    model        model.safetensors
    optimizer    optimizer.safetensors + optimizer.json (only in checkpoints that can resume)
    rng          rng.safetensors + rng.json
    train_state  its fields at the top of trainer_state.json (epoch, iter, inner_iter, by_epoch, best)
    scaler       trainer_state.json "scaler" (null without a grad scaler)
    any other    <name>.safetensors, its tensors (no file while its state is empty): ema, nan_guard, ...

Saving is asynchronous: the loop waits only while the tensors are copied to host memory; a
background thread writes, hashes, fsyncs and renames the folder, moves `latest`, then prunes.
The next save, a resume, the end of the run and a preemption wait for it first (`wait`), so at
most one checkpoint is in flight and a crash meanwhile leaves the previous one as `latest`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from accelerate.utils import broadcast_object_list

from ..errors import RecipeError
from ..files import nesting
from ..recipe.reading import dump_toml, recipe_changes, resolved_again, tomllib
from . import format
from .format import CheckpointError
from .state import OptimizerState, RNGState, Stateful, TrainState

if TYPE_CHECKING:
    from accelerate import Accelerator
    from torch import nn

    from ..recipe.root import Recipe

logger = logging.getLogger(__name__)

MODEL, OPTIMIZER, RNG, TRAIN_STATE, SCALER = "model", "optimizer", "rng", "train_state", "scaler"
LAYOUT = (MODEL, OPTIMIZER, RNG, TRAIN_STATE, SCALER)  # the parts with a place of their own

# trainer_state.json fields resume reads, and their types.
STATE_FIELDS: dict[str, type | tuple[type, ...]] = {
    "epoch": int,
    "iter": int,
    "inner_iter": int,
    "by_epoch": bool,
    "best": dict,
    "scaler": (dict, type(None)),
}


class CheckpointManager:
    """Saves, prunes and restores the checkpoints of one run as the recipe's `checkpoint_config` says.

    `states`: the parts by name; `model` and `train_state` (a `TrainState`) are required.
    `info`: more facts written into trainer_state.json for its readers (class names, the batch
    size), never restored. Under DDP every process makes the same calls; the main one writes.
    """

    def __init__(
        self,
        states: Mapping[str, Stateful],
        *,
        recipe: Recipe,
        main_process: bool = True,
        num_processes: int = 1,
        info: Callable[[], Mapping[str, Any]] = dict,
    ) -> None:
        train_state = states.get(TRAIN_STATE)
        if MODEL not in states or not isinstance(train_state, TrainState):
            raise ValueError(f"a CheckpointManager needs a {MODEL!r} part and a {TRAIN_STATE!r} TrainState")
        self.states: dict[str, Stateful] = dict(states)
        self.train_state = train_state
        self.recipe = recipe
        self.main_process, self.num_processes, self.info = main_process, num_processes, info
        cfg = recipe.checkpoint_config
        self.interval = cfg.interval
        self.by_epoch = self.train_state.by_epoch if cfg.by_epoch is None else cfg.by_epoch
        self.save_optimizer = cfg.save_optimizer
        self.max_keep_ckpts = cfg.max_keep_ckpts
        self.save_last = cfg.save_last
        work_dir = Path(recipe.work_dir)
        self.root = (Path(cfg.out_dir) / work_dir.name if cfg.out_dir else work_dir) / "checkpoints"
        self.last = ""  # the folder `latest` names: never pruned
        self._writer: ThreadPoolExecutor | None = None
        self._pending: Future | None = None
        self._staging: dict[str, dict[str, torch.Tensor]] = {}  # host buffers reused from save to save

    @classmethod
    def of_run(
        cls,
        recipe: Recipe,
        accelerator: Accelerator,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        train_state: TrainState,
        info: Callable[[], Mapping[str, Any]] = dict,
    ) -> CheckpointManager:
        """The manager of a training run: `model` (unwrapped) and `optimizer` (torch's), the random
        generators, `train_state` and Accelerate's grad scaler, if it has one."""
        states: dict[str, Stateful] = {
            MODEL: model,
            OPTIMIZER: OptimizerState(optimizer),
            RNG: RNGState(),
            TRAIN_STATE: train_state,
        }
        if accelerator.scaler is not None:
            states[SCALER] = accelerator.scaler
        return cls(
            states,
            recipe=recipe,
            main_process=accelerator.is_main_process,
            num_processes=accelerator.num_processes,
            info=info,
        )

    def add(self, name: str, part: object) -> None:
        """One more part, e.g. a hook's (with `state_dict` / `load_state_dict`); its tensors become `<name>.safetensors`."""
        if name in self.states or name in LAYOUT or not format.valid_stem(name):
            raise ValueError(f"checkpoint part name {name!r} is taken or not allowed")
        if not isinstance(part, Stateful):
            raise TypeError(f"checkpoint part {name!r}: {type(part).__name__} has no state_dict / load_state_dict")
        self.states[name] = part

    @property
    def best(self) -> dict[str, Any]:
        """`{"key", "value", "name"}` of the best checkpoint so far (empty before the first)."""
        return self.train_state.best

    def protected(self) -> set[str]:
        return {name for name in (self.best.get("name"), self.last) if name}

    def _tensor_parts(self) -> dict[str, Stateful]:
        return {name: part for name, part in self.states.items() if name not in LAYOUT or name == MODEL}

    # ----------------------------------------------------------------- when and which name

    def after_train_epoch(self, last: bool) -> None:
        """An epoch is done (`last`: the run's final one): `epoch_N` when the interval says so."""
        epoch = self.train_state.epoch
        if self.by_epoch and ((self.interval > 0 and epoch % self.interval == 0) or (last and self.save_last)):
            self._save_numbered(f"epoch_{epoch}")

    def after_train_iter(self, last: bool) -> None:
        """An iteration is done (`last`: the run's final one): `iter_N` when the interval says so."""
        it = self.train_state.iter
        if not self.by_epoch and ((self.interval > 0 and it % self.interval == 0) or (last and self.save_last)):
            self._save_numbered(f"iter_{it}")

    def _save_numbered(self, name: str) -> None:
        """An interval checkpoint, then mmcv's max_keep_ckpts pruning of its kind."""
        prune = None
        if self.max_keep_ckpts > 0:
            prefix, keep, protect = "epoch" if self.by_epoch else "iter", self.max_keep_ckpts, {name, *self.protected()}

            def prune() -> None:
                format.prune_checkpoints(self.root, prefix, keep, protect=protect)

        self.save(name, save_optimizer=self.save_optimizer, then=prune)

    def save_best(self, key: str, value: float) -> None:
        """`best_<key>_epoch_N` (or `_iter_N`), weights only, replacing the previous best folder."""
        s = self.train_state
        where = f"epoch_{s.epoch}" if s.by_epoch else f"iter_{s.iter}"
        previous = self.best.get("name")
        s.best = {"key": key, "value": value, "name": f"best_{key}_{where}"}
        remove = None
        if previous and previous != s.best["name"]:

            def remove() -> None:
                format.remove_checkpoint(self.root, previous)

        self.save(s.best["name"], save_optimizer=False, update_latest=False, then=remove)
        logger.info("best %s = %.4f so far: saving %s", key, value, s.best["name"])

    def save_step(self) -> Path:
        """A resumable checkpoint of this exact step, in place when this returns (a preemption's).

        `iter_N` for the iteration runner; `epoch_E_iter_N` (E 1-based, N global) inside an epoch,
        `epoch_E` at its end. The step's interval checkpoint already is it when it holds optimizer state.
        """
        s = self.train_state
        if not s.by_epoch:
            name = f"iter_{s.iter}"
        else:
            name = f"epoch_{s.epoch + 1}_iter_{s.iter}" if s.mid_epoch else f"epoch_{s.epoch}"
        if not (self.last == name and self.save_optimizer):
            self.save(name, save_optimizer=True)
        self.wait()
        return self.root / name

    # ----------------------------------------------------------------- writing

    def trainer_state(self) -> dict[str, Any]:
        """What `trainer_state.json` holds."""
        scaler = self.states.get(SCALER)
        return {
            **self.train_state.state_dict(),
            "num_processes": self.num_processes,
            **self.info(),
            SCALER: scaler.state_dict() if scaler is not None else None,
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
        self.wait()
        tensors = {part_name: part.state_dict() for part_name, part in self._tensor_parts().items()}
        _refuse_non_finite(self.root / name, tensors)
        if self.main_process:
            optimizer = self.states.get(OPTIMIZER) if save_optimizer else None
            rng = self.states.get(RNG)
            rng_state = rng.state_dict() if rng is not None else None
            files = format.prepare_checkpoint(
                name,
                model_state=tensors.pop(MODEL),
                trainer_state=self.trainer_state(),
                recipe_text=dump_toml(self.recipe.to_dict()),
                optimizer_state=optimizer.state_dict() if optimizer is not None else None,
                extra_tensors={stem: t for stem, t in tensors.items() if t},
                rng_state=(rng_state["tensors"], rng_state["meta"]) if rng_state is not None else None,
                staging=self._staging,
            )
            if self._writer is None:
                self._writer = ThreadPoolExecutor(1, thread_name_prefix="checkpoint")
            self._pending = self._writer.submit(self._write, name, files, update_latest, then)
        if update_latest:
            self.last = name

    def _write(self, name: str, files: format.Files, update_latest: bool, then: Callable[[], None] | None) -> None:
        path = format.write_checkpoint(self.root, name, files, update_latest=update_latest)
        logger.info("saved checkpoint %s", path)
        if then is not None:
            then()

    @property
    def writing(self) -> bool:
        """A checkpoint is being written in the background."""
        return self._pending is not None and not self._pending.done()

    def wait(self) -> None:
        """Finish the checkpoint in flight, if any; every process raises its error alike.

        Every process calls it at the same points (it is a collective under DDP)."""
        error = [""]
        if self._pending is not None:
            try:
                self._pending.result()
            except CheckpointError as e:
                error[0] = str(e)
            finally:
                self._pending = None
        if self.num_processes > 1:
            broadcast_object_list(error)  # also the barrier: nobody reads a checkpoint still being written
        if error[0]:
            raise CheckpointError(error[0])

    def remove_stale_temporaries(self) -> list[Path]:
        """Half-written folders of processes that are gone (call it holding the run lock)."""
        return format.remove_stale_temporaries(self.root)

    # ----------------------------------------------------------------- reading

    def find_resumable(self) -> Path | None:
        """The newest checkpoint that verifies, reads back whole and holds optimizer state (`best_*`
        folders do not); damaged ones are skipped with a warning."""
        self.wait()
        for path in format.candidates(self.root):
            try:
                if self._readable(path) is not None:
                    return path
            except CheckpointError as e:
                logger.warning("skipping checkpoint %s: %s", path, e)
        return None

    def _readable(self, path: Path) -> tuple[format.Checkpoint, dict[str, Any], dict[str, Any]] | None:
        """`path` read and checked against this run (see `_check`); None for a weights-only folder."""
        if format.OPTIMIZER_JSON not in format.verify_checkpoint(path, []):
            logger.warning("skipping checkpoint %s: weights only (no optimizer state), so it cannot be resumed", path)
            return None
        ckpt = format.load_checkpoint(path)
        return (ckpt, *self._check(path, ckpt))

    def resume(self, path: str | Path | None = None) -> None:
        """Continue from a checkpoint: every part is restored from it.

        `None` picks the newest resumable checkpoint under `root`; `"auto"` does too, but starts
        fresh when there is none (what a requeued job passes every time). A damaged folder is
        skipped with a warning there; a named `path` that is damaged is a CheckpointError naming
        the file. Either way a checkpoint whose model does not fit the recipe's is a RecipeError.
        """
        if path is not None and path != "auto":
            path = Path(path)
            ckpt = format.load_checkpoint(path)
            self._restore(path, ckpt, *self._check(path, ckpt))
            return
        self.wait()
        begun: CheckpointError | None = None  # a part was restored from a folder that then failed
        for found in format.candidates(self.root):
            try:
                checked = self._readable(found)
                if checked is None:
                    continue
                self._restore(found, *checked)
                return
            except _PartFailed as e:
                begun = e
                logger.warning("skipping checkpoint %s: %s", found, e)
            except CheckpointError as e:
                logger.warning("skipping checkpoint %s: %s", found, e)
        if begun is not None:  # the parts are no longer fresh, so no fresh start either
            raise begun
        if path is None:
            raise RecipeError(f"--resume: no complete checkpoint under {self.root}")
        logger.info("--resume auto: no resumable checkpoint under %s; starting fresh", self.root)

    def _check(self, path: Path, ckpt: format.Checkpoint) -> tuple[dict[str, Any], dict[str, Any]]:
        """Everything a restore reads, checked before any part changes: trainer_state.json, the
        saved recipe, the runner type and the model's tensors. Returns the state and the recipe."""
        state = _checked_state(ckpt.trainer_state, path / format.TRAINER_STATE)
        saved_recipe = _saved_recipe(path / format.RECIPE, ckpt.recipe_text)
        if OPTIMIZER in self.states and ckpt.optimizer_state is None:
            raise RecipeError(
                f"{path}: saved without optimizer state (save_optimizer = false); use --load-from for weights"
            )
        if state["by_epoch"] != self.train_state.by_epoch:
            raise RecipeError(
                f"{path}: saved by an {'epoch' if state['by_epoch'] else 'iteration'}-based run; runner.type differs"
            )
        _check_model(path / format.MODEL, ckpt.model_state, self.states[MODEL].state_dict(), saved_recipe, self.recipe)
        return state, saved_recipe

    def _restore(self, path: Path, ckpt: format.Checkpoint, state: dict[str, Any], saved_recipe: dict) -> None:
        """Hand every part its state; one that does not take it is a `_PartFailed` naming the file."""

        def load(file: str, part: Stateful, value: Any) -> None:
            try:
                part.load_state_dict(value)
            except (KeyError, ValueError, TypeError, IndexError, RuntimeError) as e:
                raise _PartFailed(f"{path / file}: does not fit this run ({e})") from None

        for name, part in self._tensor_parts().items():
            if name == MODEL:
                load(format.MODEL, part, ckpt.model_state)
            else:
                load(f"{name}.safetensors", part, ckpt.extra_tensors.get(name, {}))
        optimizer = self.states.get(OPTIMIZER)
        if optimizer is not None:
            load(format.OPTIMIZER_JSON, optimizer, ckpt.optimizer_state)
        self.train_state.load_state_dict(state)
        scaler = self.states.get(SCALER)
        if scaler is not None and state["scaler"]:
            load(format.TRAINER_STATE, scaler, state["scaler"])
        changes = recipe_changes(resolved_again(saved_recipe), self.recipe.to_dict())
        if changes:
            logger.warning("the recipe changed since %s was saved:\n%s", path, "\n".join(changes))
        rng = self.states.get(RNG)
        if rng is not None:
            load(format.RNG, rng, {"tensors": ckpt.rng[0], "meta": ckpt.rng[1]})
        self.last = path.name
        logger.info("resumed from %s at epoch %d, iter %d", path, self.train_state.epoch_shown, self.train_state.iter)


class _PartFailed(CheckpointError):
    """A part refused its state after others took theirs (so a fallback must restore them all again)."""


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
    best = state["best"]
    if best:
        value = best.get("value")
        # The best folder is removed when a better one is saved: its name must be one of this root's.
        if not (
            isinstance(best.get("key"), str)
            and (value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)))
            and format.valid_best_name(best.get("name"))
        ):
            raise CheckpointError(
                f"{where}: field 'best' = {str(best)[:200]}: expected {{key, value, name}} with name "
                "best_<metric>_epoch_N or best_<metric>_iter_N"
            )
    return state


def _saved_recipe(where: Path, text: str) -> dict[str, Any]:
    """The recipe a checkpoint was saved with, as a table (for the report of what changed since)."""
    try:
        recipe = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, RecursionError) as e:
        raise CheckpointError(f"{where}: not readable TOML ({type(e).__name__}: {str(e)[:100]})") from None
    if nesting(recipe, format.MAX_JSON_DEPTH) > format.MAX_JSON_DEPTH:
        raise CheckpointError(f"{where}: nested more than {format.MAX_JSON_DEPTH} levels deep")
    return recipe


def _check_model(where: Path, saved: Mapping[str, Any], here: Any, saved_recipe: dict, recipe: Recipe) -> None:
    """A resume continues the same model: the saved tensors must be the model's, name for name and
    shape for shape. Otherwise one line says which differ and which recipe keys changed the model."""
    if not isinstance(here, Mapping):
        return
    shape = {k: list(v.shape) for k, v in here.items() if isinstance(v, torch.Tensor)}
    differ = [
        f"{k} {list(v.shape)} saved, {shape[k]} here"
        for k, v in saved.items()
        if k in shape and list(v.shape) != shape[k]
    ]
    missing, unexpected = [k for k in shape if k not in saved], [k for k in saved if k not in shape]
    if not (differ or missing or unexpected):
        return
    details = differ[:3] + [f"{k} not saved" for k in missing[:3]] + [f"{k} not in this model" for k in unexpected[:3]]
    model_keys = [c.strip() for c in recipe_changes(saved_recipe.get("model", {}), recipe.to_dict().get("model", {}))]
    changed = f"; the recipe changed model.{', model.'.join(model_keys[:3])}" if model_keys else ""
    raise RecipeError(
        f"{where}: the checkpoint's model does not match the recipe's ({len(differ)} shapes differ, "
        f"{len(missing)} tensors missing, {len(unexpected)} unexpected: {'; '.join(details)}){changed}. "
        "A resume keeps the model: resume with the recipe it was saved with, or start a new run "
        "from its weights with --load-from"
    )


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
