"""The checkpoint folder format: checkpoints that never run code on load and are never seen half-written.

A checkpoint is a folder of safetensors, JSON and TOML files plus `manifest.json` (the sha256 of
every other file, written last). It is built in a hidden temporary sibling, fsynced and renamed
into place; only then does `<ckpt_root>/latest` move to it. Loading checks every digest first.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import logging
import os
import random
import re
import shutil
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..errors import RecipeError
from ..files import fsync, nesting, open_regular, writer_alive

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
LATEST = "latest"
MODEL, OPTIMIZER, RNG = "model.safetensors", "optimizer.safetensors", "rng.safetensors"
OPTIMIZER_JSON, RNG_JSON, TRAINER_STATE, RECIPE = "optimizer.json", "rng.json", "trainer_state.json", "recipe.toml"
RESERVED = {"model", "optimizer", "rng"}
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+=-]*")
_BEST = re.compile(r"best_[A-Za-z0-9_.+=-]+_(epoch|iter)_\d+")  # what `CheckpointManager.save_best` names
_SHA256 = re.compile(r"[0-9a-f]{64}")
_CHUNK = 1 << 20
MAX_JSON_DEPTH = 32  # far deeper than anything written here; bounds what reading a damaged file may cost
# The random generators' state as stored: tensors (rng.safetensors) and the numbers beside them (rng.json).
RngState = tuple[dict[str, torch.Tensor], dict[str, Any]]


class CheckpointError(RecipeError):
    """A checkpoint folder is incomplete or damaged; the message names the file."""


@dataclass
class Checkpoint:
    path: Path
    model_state: dict[str, torch.Tensor]
    trainer_state: dict[str, Any]
    optimizer_state: dict[str, Any] | None
    extra_tensors: dict[str, dict[str, torch.Tensor]]
    rng: RngState
    recipe_text: str


def valid_name(name: object) -> bool:
    """A checkpoint folder name: one plain entry of the checkpoint root (no separator, no leading dot)."""
    return isinstance(name, str) and bool(_NAME.fullmatch(name)) and name != LATEST


def valid_best_name(name: object) -> bool:
    """A name the best checkpoint may have: `best_<metric>_epoch_N` or `best_<metric>_iter_N`."""
    return valid_name(name) and bool(_BEST.fullmatch(str(name)))


def _open_regular(path: Path) -> int:
    """A read-only descriptor of `path`, which must be a regular file: a FIFO, a device (e.g. a
    link to /dev/zero) or a folder is refused at once instead of blocking or never ending."""
    fd = open_regular(path)
    if fd is None:
        raise CheckpointError(f"{path}: not a regular file; refusing to read it")
    return fd


def _read_bytes(path: Path) -> bytes:
    with open(_open_regular(path), "rb") as f:
        return f.read()


def _parse_json(path: Path, data: bytes) -> Any:
    """A checkpoint JSON file's value; unreadable or too deeply nested is a CheckpointError naming it."""
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise CheckpointError(f"{path}: not readable JSON ({type(e).__name__}: {str(e)[:100]})") from None
    if nesting(value, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise CheckpointError(f"{path}: nested more than {MAX_JSON_DEPTH} levels deep, so not a file written here")
    return value


def read_json(path: Path) -> Any:
    """A checkpoint's JSON file, not digest-checked; a missing, non-regular or damaged one is a CheckpointError."""
    try:
        data = _read_bytes(path)
    except OSError as e:
        raise CheckpointError(f"{path}: missing or unreadable ({e.strerror or e})") from None
    return _parse_json(path, data)


def _sha256(path: Path) -> str:
    """Stream the file through sha256 (hashlib releases the GIL, so files hash in parallel)."""
    digest, buf = hashlib.sha256(), bytearray(_CHUNK)
    view = memoryview(buf)
    with open(_open_regular(path), "rb", buffering=0) as f:
        while n := f.readinto(buf):
            digest.update(view[:n])
    return digest.hexdigest()


def _write_files(folder: Path, files: dict[str, str | dict[str, torch.Tensor]]) -> dict[str, str]:
    """Write text or tensor files in parallel threads; each is hashed from the page cache while its fsync runs."""
    with ThreadPoolExecutor(len(files)) as pool, ThreadPoolExecutor(len(files)) as syncs:

        def job(name: str, content: str | dict[str, torch.Tensor]) -> str:
            path = folder / name
            if isinstance(content, str):
                path.write_text(content, encoding="utf-8")
            else:
                save_file(content, path, metadata={"format": "pt"})
            synced = syncs.submit(fsync, path)
            digest = _sha256(path)
            synced.result()
            return digest

        futures = {name: pool.submit(job, name, content) for name, content in files.items()}
        return {name: future.result() for name, future in futures.items()}


def _savable(
    tensors: dict[str, torch.Tensor], staging: dict[str, torch.Tensor] | None = None
) -> dict[str, torch.Tensor]:
    """CPU, contiguous, no two tensors in one storage (safetensors' rules), copying only where needed.

    With `staging` (a dict kept between saves), every tensor is copied into host memory the
    training can no longer change, reusing the previous save's buffer of the same shape: fresh
    pages cost more to fault in than the copy itself.
    """
    out, seen = {}, set()
    for key, tensor in tensors.items():
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"{key}: expected a tensor, got {type(tensor).__name__}")
        if staging is not None:
            buffer = staging.get(key)
            if buffer is None or buffer.shape != tensor.shape or buffer.dtype != tensor.dtype:
                buffer = staging[key] = torch.empty(tensor.shape, dtype=tensor.dtype, device="cpu")
            out[key] = buffer.copy_(tensor.detach())
            continue
        tensor = tensor.detach().cpu().contiguous()
        ptr = tensor.untyped_storage().data_ptr()
        if ptr and ptr in seen:
            tensor = tensor.clone()
        seen.add(ptr)
        out[key] = tensor
    return out


def _exchange(a: Path, b: Path) -> bool:
    """Swap two folders atomically (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _delete(path: Path) -> None:
    """Delete a folder of this root, or a link or file: a link goes, never what it points to."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _child(ckpt_root: Path, name: str) -> Path:
    """`ckpt_root / name`, refused unless `name` is a checkpoint folder name and the path stays in the root."""
    path = Path(ckpt_root) / name
    inside = path.is_symlink() or path.resolve().parent == Path(ckpt_root).resolve()
    if not valid_name(name) or not inside:
        raise CheckpointError(f"{ckpt_root}: {name!r} is not a checkpoint folder of this root; not touching it")
    return path


def _install(tmp: Path, final: Path) -> None:
    """Move the finished folder to its name; an existing one is swapped out, then deleted."""
    if not final.exists():
        os.rename(tmp, final)
    elif not _exchange(tmp, final):
        aside = final.with_name(f".old-{final.name}-{os.getpid()}")
        os.rename(final, aside)
        os.rename(tmp, final)
        tmp = aside
    fsync(final.parent)
    _delete(tmp)


def _write_durable(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _write_latest(root: Path, name: str) -> None:
    """Replace `latest` atomically: readers see the old name or the new one, never a partial file."""
    tmp = root / f".tmp-{LATEST}-{os.getpid()}"
    try:
        _write_durable(tmp, name + "\n")
        os.replace(tmp, root / LATEST)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync(root)


def _remove(ckpt_root: Path, name: str) -> None:
    """Hide the folder with one rename first, so a crash mid-delete leaves nothing that looks like a checkpoint.

    Only a checkpoint folder of `ckpt_root` is removed; a link there goes, what it points to stays."""
    path = _child(ckpt_root, name)
    if path.is_symlink():
        path.unlink()
        return
    hidden = path.with_name(f".del-{name}-{os.getpid()}")
    os.rename(path, hidden)
    shutil.rmtree(hidden, ignore_errors=True)


def _encode(value: Any, path: str, tensors: dict[str, torch.Tensor]) -> Any:
    """JSON for a state dict: tensors move to `tensors` under their dotted path; tuples and int keys are tagged."""
    if isinstance(value, torch.Tensor):
        tensors[path] = value
        return {"__tensor__": path}
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v, f"{path}.{i}", tensors) for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_encode(v, f"{path}.{i}", tensors) for i, v in enumerate(value)]
    if isinstance(value, dict):
        items = [(k, _encode(v, f"{path}.{k}" if path else str(k), tensors)) for k, v in value.items()]
        if all(isinstance(k, str) and not k.startswith("__") for k in value):
            return dict(items)
        return {"__items__": [list(item) for item in items]}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"{path}: cannot store a {type(value).__name__} in a checkpoint")


def _decode(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, list):
        return [_decode(v, tensors) for v in value]
    if not isinstance(value, dict):
        return value
    if "__tensor__" in value:
        return tensors[value["__tensor__"]]
    if "__tuple__" in value:
        return tuple(_decode(v, tensors) for v in value["__tuple__"])
    if "__items__" in value:
        return {k: _decode(v, tensors) for k, v in value["__items__"]}
    return {k: _decode(v, tensors) for k, v in value.items()}


def capture_rng_state() -> RngState:
    """Python `random`, numpy's legacy global RNG, torch CPU and every CUDA device already in use."""
    py_version, py_state, gauss_next = random.getstate()
    _, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state(legacy=True)
    tensors = {
        "python": torch.tensor(py_state, dtype=torch.int64),
        "numpy": torch.from_numpy(np.asarray(np_keys).astype(np.int64)),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors.update({f"cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    meta = {
        "python_version": py_version,
        "python_gauss_next": gauss_next,
        "numpy_pos": int(np_pos),
        "numpy_has_gauss": int(np_has_gauss),
        "numpy_cached_gaussian": float(np_gauss),
    }
    return tensors, meta


def restore_rng_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Undo `capture_rng_state`; parts that were not captured (e.g. CUDA on a CPU run) are left alone."""
    if "python" in tensors:
        state = tuple(int(x) for x in tensors["python"].tolist())
        random.setstate((meta["python_version"], state, meta["python_gauss_next"]))
    if "numpy" in tensors:
        keys = tensors["numpy"].numpy().astype(np.uint32)
        np.random.set_state(
            ("MT19937", keys, meta["numpy_pos"], meta["numpy_has_gauss"], meta["numpy_cached_gaussian"])
        )
    if "torch" in tensors:
        torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted((k for k in tensors if k.startswith("cuda.")), key=lambda k: int(k[5:]))]
    if cuda and torch.cuda.is_available():
        if len(cuda) != torch.cuda.device_count():
            logger.warning(
                "checkpoint has CUDA RNG states for %d devices, this machine has %d",
                len(cuda),
                torch.cuda.device_count(),
            )
        for device, cuda_state in enumerate(cuda[: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state, device)


def _check_rng(path: Path, tensors: dict[str, torch.Tensor], meta: Any) -> None:
    """What `restore_rng_state` will read has the types and sizes it needs (for the generators present)."""
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path / RNG_JSON}: expected a JSON object")

    def need(key: str, ok: bool, expected: str) -> None:
        if not ok:
            raise CheckpointError(f"{path / RNG_JSON}: field {key!r} = {meta.get(key)!r}: expected {expected}")

    def integer(key: str, low: int, high: int) -> bool:
        value = meta.get(key)
        return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high

    def number(key: str) -> bool:
        return isinstance(meta.get(key), (int, float)) and not isinstance(meta.get(key), bool)

    def tensor(key: str, dtypes: tuple[torch.dtype, ...], size: int | None = None) -> None:
        t = tensors[key]
        if t.dtype not in dtypes or t.dim() != 1 or (size is not None and t.numel() != size):
            raise CheckpointError(
                f"{path / RNG}: tensor {key!r} is {t.dtype} of shape {list(t.shape)}, not a generator state"
            )

    if "python" in tensors:
        tensor("python", (torch.int64,), 625)
        words, index = tensors["python"][:624], int(tensors["python"][624])
        if not (0 <= index <= 624 and bool(((words >= 0) & (words < 1 << 32)).all())):
            raise CheckpointError(f"{path / RNG}: tensor 'python' is not a Mersenne Twister state")
        need("python_version", integer("python_version", 0, 1 << 30), "an integer")
        need("python_gauss_next", meta.get("python_gauss_next") is None or number("python_gauss_next"), "a number")
    if "numpy" in tensors:
        tensor("numpy", (torch.int64,), 624)
        need("numpy_pos", integer("numpy_pos", 0, 624), "an integer from 0 to 624")
        need("numpy_has_gauss", integer("numpy_has_gauss", 0, 1), "0 or 1")
        need("numpy_cached_gaussian", number("numpy_cached_gaussian"), "a number")
    for key in tensors:
        if key == "torch" or key.startswith("cuda."):
            tensor(key, (torch.uint8,))
            if key.startswith("cuda.") and not key[5:].isdigit():
                raise CheckpointError(f"{path / RNG}: tensor {key!r} is not named cuda.<device index>")


Files = dict[str, "str | dict[str, torch.Tensor]"]


def valid_stem(stem: str) -> bool:
    """A name that may become `<stem>.safetensors` beside the reserved files."""
    return bool(_NAME.fullmatch(stem)) and stem not in RESERVED


def prepare_checkpoint(
    name: str,
    *,
    model_state: dict[str, torch.Tensor],
    trainer_state: dict,
    recipe_text: str,
    optimizer_state: dict[str, Any] | None = None,
    extra_tensors: dict[str, dict[str, torch.Tensor]] | None = None,
    rng_state: RngState | None = None,
    staging: dict[str, dict[str, torch.Tensor]] | None = None,
) -> Files:
    """A checkpoint's files in memory, ready for `write_checkpoint`. With `staging` (a dict the
    caller keeps between saves and does not touch while a write is in flight), every tensor is
    copied to host memory, so training may go on while another thread writes them."""
    if not valid_name(name):
        raise ValueError(f"checkpoint name {name!r}: use letters, digits and _.+=- (not starting with '.')")
    extras = extra_tensors or {}
    for stem in extras:
        if not valid_stem(stem):
            raise ValueError(f"extra_tensors name {stem!r} is not allowed")

    def stage(file: str) -> dict[str, torch.Tensor] | None:
        return None if staging is None else staging.setdefault(file, {})

    files: Files = {
        MODEL: _savable(model_state, stage(MODEL)),
        TRAINER_STATE: json.dumps(trainer_state, indent=2),
        RECIPE: recipe_text,
    }
    if optimizer_state is not None:
        opt_tensors: dict[str, torch.Tensor] = {}
        structure = _encode(optimizer_state, "", opt_tensors)
        files[OPTIMIZER], files[OPTIMIZER_JSON] = _savable(opt_tensors, stage(OPTIMIZER)), json.dumps(structure)
    for stem, tensors in extras.items():
        files[f"{stem}.safetensors"] = _savable(tensors, stage(f"{stem}.safetensors"))
    if rng_state is not None:
        rng_tensors, rng_meta = rng_state
        files[RNG], files[RNG_JSON] = _savable(rng_tensors), json.dumps(rng_meta)
    return files


def write_checkpoint(ckpt_root: Path, name: str, files: Files, *, update_latest: bool = True) -> Path:
    """Write `<ckpt_root>/<name>/` completely or not at all, then point `latest` at it (if `update_latest`)."""
    ckpt_root = Path(ckpt_root)
    if not valid_name(name):
        raise ValueError(f"checkpoint name {name!r}: use letters, digits and _.+=- (not starting with '.')")
    tmp, final = ckpt_root / f".tmp-{name}-{os.getpid()}", ckpt_root / name
    try:
        ckpt_root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            digests = _write_files(tmp, files)
            _write_durable(tmp / MANIFEST, json.dumps({"sha256": digests}, indent=2))
            fsync(tmp)
            _install(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if update_latest:
            _write_latest(ckpt_root, name)
    except (OSError, SafetensorError) as e:
        # Disk full, read-only or gone: every earlier checkpoint and `latest` are as they were.
        raise CheckpointError(
            f"{final}: cannot write the checkpoint ({getattr(e, 'strerror', None) or e}); "
            "earlier checkpoints and 'latest' are untouched"
        ) from None
    return final


def save_checkpoint(
    ckpt_root: Path,
    name: str,
    *,
    model_state: dict[str, torch.Tensor],
    trainer_state: dict,
    recipe_text: str,
    optimizer: torch.optim.Optimizer | None = None,
    extra_tensors: dict[str, dict[str, torch.Tensor]] | None = None,
    rng: bool = True,
    update_latest: bool = True,
) -> Path:
    """Write a checkpoint now, in this thread (`prepare_checkpoint` + `write_checkpoint`), with the
    optimizer's state and (with `rng`) the random generators' as they are now.

    `extra_tensors` maps a file stem (e.g. "ema") to tensors written as `<stem>.safetensors`.
    """
    files = prepare_checkpoint(
        name,
        model_state=model_state,
        trainer_state=trainer_state,
        recipe_text=recipe_text,
        optimizer_state=None if optimizer is None else optimizer.state_dict(),
        extra_tensors=extra_tensors,
        rng_state=capture_rng_state() if rng else None,
    )
    return write_checkpoint(ckpt_root, name, files, update_latest=update_latest)


def _read_manifest(path: Path) -> dict[str, str]:
    """`manifest.json`'s digests: an object mapping file names of this folder to sha256 hex strings."""
    if not path.is_dir():
        raise CheckpointError(f"{path}: not a checkpoint folder")
    where = path / MANIFEST
    if not where.exists():
        raise CheckpointError(f"{where}: missing, so the checkpoint is incomplete")
    manifest = read_json(where)
    digests = manifest.get("sha256") if isinstance(manifest, dict) else None
    if not isinstance(digests, dict):
        raise CheckpointError(f"{where}: damaged (expected an object with a 'sha256' object of file digests)")
    for name, digest in digests.items():
        if Path(name).name != name or name.startswith("."):
            raise CheckpointError(f"{where}: lists {name!r}, which is not a file of this folder")
        if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
            raise CheckpointError(f"{where}: the digest of {name!r} is not a sha256 hex string")
    return digests


def verify_checkpoint(path: Path, names: Iterable[str] | None = None) -> dict[str, str]:
    """Recompute the sha256 of the given files (default: all in the manifest) in parallel; returns the manifest."""
    path = Path(path)
    expected = _read_manifest(path)
    names = list(expected if names is None else names)
    for name in names:
        if name not in expected:
            raise CheckpointError(f"{path / name}: not listed in {MANIFEST}")
        if not (path / name).is_file():
            raise CheckpointError(f"{path / name}: missing (listed in {MANIFEST})")
    with ThreadPoolExecutor(min(8, len(names) or 1)) as pool:
        try:
            actual = dict(zip(names, pool.map(_sha256, (path / n for n in names))))
        except OSError as e:
            raise CheckpointError(f"{e.filename}: unreadable ({e.strerror or e})") from None
    for name in names:
        if actual[name] != expected[name]:
            raise CheckpointError(f"{path / name}: sha256 mismatch, the file is damaged or was changed after saving")
    return expected


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors file's tensors; an unreadable file (or not a regular one) is a CheckpointError naming it."""
    try:
        os.close(_open_regular(Path(path)))
        return load_file(path)
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None


def _read_optimizer(path: Path, structure: Any, tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    """`optimizer.json` + `optimizer.safetensors` as a torch optimizer state dict, its shape checked field by field."""
    where = path / OPTIMIZER_JSON
    try:
        state = _decode(structure, tensors)
    except KeyError as e:
        raise CheckpointError(f"{where}: refers to tensor {e} that {OPTIMIZER} does not hold") from None
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{where}: malformed ({e})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{where}: expected an object with 'state' and 'param_groups'")
    if not isinstance(state.get("state"), dict):
        raise CheckpointError(f"{where}: field 'state' is missing or not an object")
    groups = state.get("param_groups")
    if not isinstance(groups, list) or not groups:
        raise CheckpointError(f"{where}: field 'param_groups' is missing or not a non-empty list")
    for i, group in enumerate(groups):
        params = group.get("params") if isinstance(group, dict) else None
        if not isinstance(params, list) or not all(isinstance(p, int) and not isinstance(p, bool) for p in params):
            raise CheckpointError(f"{where}: field 'param_groups[{i}].params' is missing or not a list of integers")
    return state


def _read_file(path: Path, digest: str | None) -> Any:
    """One checkpoint file, its digest checked first (if `digest`), parsed by its suffix.

    Tensors are memory-mapped by safetensors, so after hashing the bytes are read from the page
    cache only where a tensor is used."""
    if digest is not None:
        try:
            actual = _sha256(path)
        except OSError as e:
            raise CheckpointError(f"{path}: missing or unreadable ({e.strerror or e})") from None
        if actual != digest:
            raise CheckpointError(f"{path}: sha256 mismatch, the file is damaged or was changed after saving")
    if path.suffix == ".safetensors":
        return read_tensors(path)
    if path.suffix == ".json":
        return read_json(path)
    try:
        return _read_bytes(path).decode("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not readable text ({getattr(e, 'strerror', None) or e})") from None


def load_checkpoint(path: Path, *, verify: bool = True) -> Checkpoint:
    """Read a checkpoint folder; with `verify`, every file must match its manifest digest.

    Each file is hashed and opened in its own thread (hashing releases the GIL), so the files
    verify in parallel and a big file's hash overlaps the others' reading.
    """
    path = Path(path)
    expected = _read_manifest(path)
    for name in (MODEL, TRAINER_STATE, RECIPE):
        if name not in expected:
            raise CheckpointError(f"{path / name}: not listed in {MANIFEST}")
    with ThreadPoolExecutor(min(8, len(expected))) as pool:
        futures = {n: pool.submit(_read_file, path / n, digest if verify else None) for n, digest in expected.items()}
        content = {n: future.result() for n, future in futures.items()}
    optimizer_state = None
    if OPTIMIZER_JSON in content:
        optimizer_state = _read_optimizer(path, content[OPTIMIZER_JSON], content.get(OPTIMIZER, {}))
    rng = (content[RNG], content[RNG_JSON]) if RNG in content and RNG_JSON in content else ({}, {})
    _check_rng(path, *rng)
    extras = {
        n[: -len(".safetensors")]: content[n]
        for n in sorted(content)
        if n.endswith(".safetensors") and n[: -len(".safetensors")] not in RESERVED
    }
    return Checkpoint(
        path=path,
        model_state=content[MODEL],
        trainer_state=content[TRAINER_STATE],
        optimizer_state=optimizer_state,
        extra_tensors=extras,
        rng=rng,
        recipe_text=content[RECIPE],
    )


def _order(path: Path) -> tuple[int, bool]:
    """Newest first: the saved iteration (else the last number in the name), then having optimizer state."""
    try:
        step = read_json(path / TRAINER_STATE)["iter"]
    except (CheckpointError, KeyError, TypeError, IndexError):
        step = None
    if not isinstance(step, int) or isinstance(step, bool):
        numbers = re.findall(r"\d+", path.name)
        step = int(numbers[-1]) if numbers else -1
    return step, (path / OPTIMIZER).exists()


def read_latest(ckpt_root: Path) -> str:
    """The folder name `latest` holds; '' without one, and (with a warning) when it holds no checkpoint name."""
    latest_file = Path(ckpt_root) / LATEST
    if not latest_file.exists():
        return ""
    try:
        latest = _read_bytes(latest_file).decode("utf-8").strip()
    except (OSError, UnicodeDecodeError, CheckpointError) as e:
        latest = f"<unreadable: {getattr(e, 'strerror', None) or e}>"
    if not valid_name(latest):
        logger.warning("%s: holds %.80r, not a checkpoint folder name; ignoring it", latest_file, latest)
        return ""
    return latest


def candidates(ckpt_root: Path) -> list[Path]:
    """Checkpoint folders, newest first: the one `latest` names, then by saved iteration."""
    ckpt_root = Path(ckpt_root)
    if not ckpt_root.is_dir():
        return []
    latest = read_latest(ckpt_root)
    first = [ckpt_root / latest] if latest else []
    others = [p for p in ckpt_root.iterdir() if p.is_dir() and valid_name(p.name) and p.name != latest]
    return first + sorted(others, key=_order, reverse=True)


def remove_checkpoint(ckpt_root: Path, name: str) -> None:
    """Remove the checkpoint folder `name` of `ckpt_root`, if it exists; any other name is a CheckpointError."""
    path = _child(Path(ckpt_root), name)
    if path.is_dir() or path.is_symlink():
        _remove(Path(ckpt_root), name)


_TEMPORARY = re.compile(r"\.(tmp|old|del)-.+-(\d+)")


def remove_stale_temporaries(ckpt_root: Path) -> list[Path]:
    """Remove `.tmp-`, `.old-` and `.del-` leftovers (folders or `latest` files) of processes that are gone.

    Each is named after the pid that made it; those of a live process are left alone.
    """
    ckpt_root = Path(ckpt_root)
    if not ckpt_root.is_dir():
        return []
    removed = []
    for path in ckpt_root.iterdir():
        m = _TEMPORARY.fullmatch(path.name)
        if m and not writer_alive(int(m[2])):
            _delete(path)
            removed.append(path)
    return removed


def prune_checkpoints(ckpt_root: Path, prefix: str, keep: int, protect: set[str]) -> None:
    """mmcv's max_keep_ckpts: keep the newest `keep` `<prefix>_N` folders (keep <= 0: all), never those in `protect`."""
    if keep <= 0:
        return
    ckpt_root = Path(ckpt_root)
    pattern = re.compile(re.escape(prefix) + r"_(\d+)")
    numbered = [(int(m[1]), p) for p in ckpt_root.iterdir() if p.is_dir() and (m := pattern.fullmatch(p.name))]
    for _, path in sorted(numbered, reverse=True)[keep:]:
        if path.name not in protect:
            _remove(ckpt_root, path.name)


def read_recipe_text(path: str | Path) -> str:
    """The recipe a checkpoint folder was trained with (what rebuilding its model needs; not digest-checked)."""
    recipe_file = Path(path) / RECIPE
    if not recipe_file.is_file():
        raise RecipeError(
            f"{path}: not a checkpoint folder (no {RECIPE}); expected e.g. work_dirs/cls/checkpoints/epoch_8"
        )
    return _read_file(recipe_file, None)


def read_trainer_state(path: str | Path) -> dict[str, Any] | None:
    """A checkpoint folder's `trainer_state.json` (e.g. its class names), not digest-checked; None where there is none."""
    state_file = Path(path) / TRAINER_STATE
    return read_json(state_file) if state_file.is_file() else None


def load_extra_tensors(path: str | Path, stem: str) -> dict[str, torch.Tensor] | None:
    """A checkpoint folder's `<stem>.safetensors` (e.g. the EMA), digest-checked; None where there is none."""
    path, name = Path(path), f"{stem}.safetensors"
    if not (path / name).is_file():
        return None
    if (path / MANIFEST).exists():
        verify_checkpoint(path, [name])
    return read_tensors(path / name)
