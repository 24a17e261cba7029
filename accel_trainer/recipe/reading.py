"""Reading recipes: TOML files with `_base_` inheritance, `_delete_` tables and `--set` overrides,
and writing a resolved recipe back as TOML.

`read_recipe` returns a `Recipe` checked section by section (`root.py`); `load.load_recipe` adds the
open sections, parsed by the components that own them. Nothing is built here.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import tomli_w

from ..errors import RecipeError
from ..files import nesting
from .root import Recipe
from .task_keys import keep_table_defaults

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

BASE_KEY = "_base_"
DELETE_KEY = "_delete_"
# Deeper than any recipe needs; keeps a crafted `--set a.a.a...` or nested value from exhausting the stack.
MAX_DEPTH = 32
# The longest line `dump_toml` joins an array into.
COMPACT_WIDTH = 100


def read_toml(path: Path) -> dict:
    """Parse one TOML file; a syntax error, a byte that is not UTF-8 or absurd nesting names the file
    (tomllib's line/column for syntax), before anything recurses through the tables."""
    if not path.is_file():
        raise RecipeError(f"recipe file not found: {path}")
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError(f"{path}: invalid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise RecipeError(
            f"{path}: not UTF-8 text (byte {exc.start} is {exc.object[exc.start]:#04x}); TOML files are UTF-8"
        ) from None
    except RecursionError:
        raise RecipeError(
            f"{path}: arrays or tables nested too deeply to read; no recipe key is more than {MAX_DEPTH} deep"
        ) from None
    _check_depth(data, str(path))
    return data


def merge(base: dict, override: Mapping) -> dict:
    """Recursively merge `override` into a copy of `base`; later wins.

    A table with `_delete_ = true` replaces the inherited table instead of merging into it,
    as in mmcv configs.
    """
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, Mapping):
            value = dict(value)
            replace = value.pop(DELETE_KEY, False)
            if not replace and isinstance(out.get(key), dict):
                out[key] = merge(out[key], value)
            else:
                out[key] = merge({}, value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _strip_delete(table: dict) -> dict:
    """Drop `_delete_` markers left in tables that had nothing to replace."""
    return {k: _strip_delete(v) if isinstance(v, dict) else v for k, v in table.items() if k != DELETE_KEY}


def load_raw(path: str | Path, _chain: tuple[Path, ...] = ()) -> dict:
    """Load a recipe file with its `_base_` files merged in (paths relative to the file)."""
    path = Path(path).resolve()
    if path in _chain:
        cycle = " -> ".join(str(p) for p in (*_chain, path))
        raise RecipeError(f"_base_ files include each other: {cycle}")
    data = read_toml(path)
    bases = data.pop(BASE_KEY, [])
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise RecipeError(f"{path}: {BASE_KEY} must be a file path or a list of file paths, got {bases!r}")
    merged: dict = {}
    for base in bases:
        base_path = path.parent / base
        if not base_path.is_file():
            raise RecipeError(f"{path}: {BASE_KEY} file not found: {base} (looked for {base_path})")
        merged = merge(merged, load_raw(base_path, (*_chain, path)))
    return merge(merged, data)


def parse_override(item: str) -> tuple[str, Any]:
    """Split 'a.b.c=VALUE' and parse VALUE as a TOML value."""
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise RecipeError(f"--set {item!r}: expected KEY=VALUE, e.g. optimizer.lr=0.01")
    if key.count(".") >= MAX_DEPTH:
        raise RecipeError(f"--set {key[:40]}...: a key path of more than {MAX_DEPTH} parts; no recipe key is that deep")
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except RecursionError:
        raise RecipeError(f"--set {key}: the value is nested too deeply to read") from None
    except tomllib.TOMLDecodeError:
        raise RecipeError(
            f"--set {item!r}: {text!r} is not a TOML value; strings need quotes, e.g. {key}='\"{text}\"'"
        ) from None
    return key, value


def apply_overrides(data: dict, overrides: Mapping[str, Any]) -> dict:
    """Set dotted keys (`{"runner.max_epochs": 3}`), creating tables on the way."""
    out = copy.deepcopy(data)
    for dotted, value in overrides.items():
        _check_depth(value, f"--set {dotted}")
        parts = dotted.split(".")
        if len(parts) > MAX_DEPTH:
            raise RecipeError(f"cannot set {dotted[:40]}...: more than {MAX_DEPTH} parts; no recipe key is that deep")
        table = out
        for depth, part in enumerate(parts[:-1]):
            nxt = table.setdefault(part, {})
            if not isinstance(nxt, dict):
                where = ".".join(parts[: depth + 1])
                raise RecipeError(f"cannot set {dotted!r}: {where!r} is a value, not a table")
            table = nxt
        table[parts[-1]] = copy.deepcopy(value)
    return out


def _check_depth(value: Any, where: str) -> None:
    """Refuse tables or lists nested deeper than MAX_DEPTH below the top (checked without recursion)."""
    if nesting(value, MAX_DEPTH + 1) > MAX_DEPTH + 1:
        raise RecipeError(f"{where}: tables or lists nested more than {MAX_DEPTH} deep; no recipe key is that deep")


def read_recipe(
    path: str | Path,
    overrides: Mapping[str, Any] | None = None,
    work_dir: str | Path | None = None,
    check_files: bool = True,
) -> Recipe:
    """Read, merge, override and check (section by section) a recipe file (`check_files`: see `Recipe.from_dict`)."""
    path = Path(path)
    raw = load_raw(path)
    overrides = overrides or {}
    data = _strip_delete(keep_table_defaults(raw, apply_overrides(raw, overrides), overrides))
    if work_dir is not None:
        data["work_dir"] = str(work_dir)
    if not data.get("work_dir"):
        data["work_dir"] = str(Path("work_dirs") / path.stem)
    return Recipe.from_dict(data, source=str(path), check_files=check_files)


def _inline(value: Any) -> str | None:
    """A list of scalars (or of such lists) as one line, each scalar as tomli_w writes it; None if it holds a table."""
    if isinstance(value, list):
        items = [_inline(item) for item in value]
        return None if None in items else "[" + ", ".join(item for item in items if item is not None) + "]"
    if isinstance(value, Mapping):
        return None
    return tomli_w.dumps({"v": value})[len("v = ") : -1]


def dump_toml(data: Mapping) -> str:
    """Render a plain dict as TOML text (tables after plain keys, stable order).

    tomli_w puts every array item on a line of its own; an array that fits in COMPACT_WIDTH is
    written on one line instead (`workflow = [["train", 1], ["val", 1]]`).
    """
    lines = tomli_w.dumps(dict(data)).split("\n")
    out: list[str] = []
    start = 0
    while start < len(lines):
        line = lines[start]
        end = lines.index("]", start) if line.endswith(" = [") else start
        if end > start:
            ((_, value),) = tomllib.loads("\n".join(lines[start : end + 1])).items()
            one_line = _inline(value)
            if one_line is not None and len(line) - 1 + len(one_line) <= COMPACT_WIDTH:
                out.append(line[:-1] + one_line)
                start = end + 1
                continue
        out.append(line)
        start += 1
    return "\n".join(out)


def flatten(data: Mapping, prefix: str = "") -> dict[str, Any]:
    """`{"a": {"b": 1}}` -> `{"a.b": 1}`, for reporting differences between recipes."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def resolved_again(saved: dict) -> dict:
    """A checkpoint's recipe as this version resolves it, so that what only changed form (a key the
    resolved recipe now leaves out, such as an epoch runner's `max_iters`) is not reported as a
    change; as saved when it no longer passes today's checks."""
    try:
        return Recipe.from_dict(copy.deepcopy(saved), check_files=False).to_dict()
    except RecipeError:
        return saved


def recipe_changes(saved: Mapping, now: Mapping) -> list[str]:
    """`key: old -> new` lines for every leaf that differs between two resolved recipes (work_dir aside)."""
    old, new = flatten(saved), flatten(now)
    changed = sorted(k for k in old.keys() | new.keys() if k != "work_dir" and old.get(k) != new.get(k))
    return [f"  {k}: {old.get(k, '(unset)')!r} -> {new.get(k, '(unset)')!r}" for k in changed]
