"""Read an mmcv 1.x Python config without executing it: `ast` evaluation of its assignments.

Only literals, `dict/list/tuple/set(...)`, arithmetic on numbers, `+` on strings and lists, and
names assigned earlier in the same file are evaluated; anything else (another call, an attribute,
an import, a comprehension) is refused with its file and line, so reading a config cannot run
code. `_base_` files (paths relative to the config) are merged first, with mmcv's `_delete_` rule.
"""

from __future__ import annotations

import ast
import math
import operator
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import RecipeError
from ..recipe.checks import is_number
from ..recipe.reading import BASE_KEY, merge

MAX_INT_BITS = 4096
MAX_SEQUENCE_LEN = 100_000
# A name's value is shared where it is used, so ten lines of `b = [a, a, a, a, a, a, a, a, a, a]`
# describe 10**10 items without holding them; written out as TOML they would be. Each value is
# measured as written (items plus characters) and as nested, from its parts' measures, as it is read.
MAX_VALUE_SIZE = 1_000_000
MAX_VALUE_DEPTH = 32

_NUMBER_OPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_CONTAINER_CALLS = ("dict", "list", "tuple", "set")


def _too_big(op: type, left: Any, right: Any) -> bool:
    """Whether an integer product or power would exceed MAX_INT_BITS (a config needs no huge numbers)."""
    if not (isinstance(left, int) and isinstance(right, int)):
        return op is ast.Pow and abs(right) > 1024
    if op is ast.Mult:
        return left.bit_length() + right.bit_length() > MAX_INT_BITS
    if op is ast.Pow:
        return right > 0 and max(left.bit_length(), 1) * right > MAX_INT_BITS
    return False


class _Reader:
    """Evaluates one config file's module-level assignments without running anything.

    Values are plain dicts, lists (tuples and sets become lists) and scalars; a name's value is
    shared, not copied, where it is referenced, and nothing here changes a value once built.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.names: dict[str, Any] = {}
        self.lines: dict[str, int] = {}
        # id of each list or dict built -> (the value, kept alive so the id stays its own; size; depth)
        self.measures: dict[int, tuple[Any, int, int]] = {}

    def fail(self, node: ast.AST, why: str) -> RecipeError:
        text = ast.unparse(node)
        text = text if len(text) <= 60 else text[:57] + "..."
        return RecipeError(
            f"{self.path}:{getattr(node, 'lineno', '?')}: `{text}`: {why}; configs are read without running them, so only "
            "literals, dict/list/tuple/set(...), arithmetic and names assigned earlier can be used"
        )

    def read(self) -> None:
        try:
            source = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise RecipeError(f"{self.path}: cannot read the config: {exc}") from None
        # Python's parser gives up on absurd nesting (a 100,000-deep `- - - 1`) with MemoryError or
        # RecursionError, and so would this reader: both are a refusal, not a crash.
        try:
            module = ast.parse(source, filename=str(self.path))
            for stmt in module.body:
                self.statement(stmt)
        except SyntaxError as exc:
            raise RecipeError(f"{self.path}:{exc.lineno}: invalid Python: {exc.msg}") from None
        except (MemoryError, RecursionError):
            raise RecipeError(f"{self.path}: nested too deeply to read; a config needs no such expressions") from None

    def statement(self, stmt: ast.stmt) -> None:
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
            return  # a docstring or a bare literal
        if isinstance(stmt, ast.Assign):
            targets, value_node = stmt.targets, stmt.value
        elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
            targets, value_node = [stmt.target], stmt.value
        else:
            raise self.fail(stmt, f"{type(stmt).__name__} statements are not read, only assignments")
        value = self.value(value_node)
        for target in targets:
            if not isinstance(target, ast.Name):
                raise self.fail(target, "only plain names can be assigned")
            self.names[target.id] = value
            self.lines[target.id] = stmt.lineno

    def value(self, node: ast.expr) -> Any:
        """The node's value, refused when it would be too large or too deep once written out."""
        value = self._value(node)
        size, depth = self.measure(value)
        if size > MAX_VALUE_SIZE:
            raise self.fail(node, f"the value would hold more than {MAX_VALUE_SIZE:_} items once written out")
        if depth > MAX_VALUE_DEPTH:
            raise self.fail(node, f"the value is nested more than {MAX_VALUE_DEPTH} deep")
        return value

    def measure(self, value: Any) -> tuple[int, int]:
        """(items and characters, nesting depth) of `value` written out; its lists and dicts are
        measured once, when built, so each measure adds up parts already known."""
        if isinstance(value, str):
            return max(len(value), 1), 0
        if not isinstance(value, (list, dict)):
            return 1, 0
        known = self.measures.get(id(value))
        if known is not None and known[0] is value:
            return known[1], known[2]
        parts = [self.measure(v) for v in (value.values() if isinstance(value, dict) else value)]
        size = 1 + len(value) + sum(s for s, _ in parts)
        depth = 1 + max((d for _, d in parts), default=0)
        self.measures[id(value)] = (value, size, depth)
        return size, depth

    def _value(self, node: ast.expr) -> Any:
        if isinstance(node, ast.Constant):
            if isinstance(node.value, float) and not math.isfinite(node.value):
                raise self.fail(node, "the number is not finite (TOML would get inf)")
            if node.value is None or isinstance(node.value, (str, bool, int, float)):
                return node.value
            raise self.fail(node, f"{type(node.value).__name__} values have no TOML form")
        if isinstance(node, ast.Name):
            if node.id not in self.names:
                raise self.fail(node, f"{node.id!r} is not assigned earlier in this file")
            return self.names[node.id]
        if isinstance(node, (ast.List, ast.Tuple)):
            return [self.value(item) for item in node.elts]
        if isinstance(node, ast.Set):
            return _unique([self.value(item) for item in node.elts])
        if isinstance(node, ast.Dict):
            out: dict = {}
            for key, item in zip(node.keys, node.values):
                if key is None:
                    out.update(self.mapping(item))
                else:
                    out[self.key(key)] = self.value(item)
            return out
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            operand = self.value(node.operand)
            if not is_number(operand):
                raise self.fail(node, "a sign applies to numbers only")
            return -operand if isinstance(node.op, ast.USub) else operand
        if isinstance(node, ast.BinOp):
            return self.binop(node)
        if isinstance(node, ast.Call):
            return self.call(node)
        raise self.fail(node, f"{type(node).__name__} expressions are not evaluated")

    def key(self, node: ast.expr) -> Any:
        value = self.value(node)
        if not isinstance(value, (str, int, float, bool)):
            raise self.fail(node, "dict keys must be strings or numbers")
        return value

    def mapping(self, node: ast.expr) -> dict:
        value = self.value(node)
        if not isinstance(value, dict):
            raise self.fail(node, "`**` needs a dict")
        return value

    def binop(self, node: ast.BinOp) -> Any:
        left, right = self.value(node.left), self.value(node.right)
        op = type(node.op)
        if is_number(left) and is_number(right) and op in _NUMBER_OPS:
            if _too_big(op, left, right):
                raise self.fail(node, "the result would be too large")
            try:
                result = _NUMBER_OPS[op](left, right)
            except (ArithmeticError, ValueError) as exc:
                raise self.fail(node, str(exc)) from None
            if isinstance(result, float) and not math.isfinite(result):
                raise self.fail(node, f"the result is {result}, not a finite number")
            return result
        if op is ast.Add and type(left) is type(right) and isinstance(left, (str, list)):
            if len(left) + len(right) > MAX_SEQUENCE_LEN:
                raise self.fail(node, "the result would be too long")
            return left + right
        raise self.fail(node, f"{type(node.op).__name__} of {type(left).__name__} and {type(right).__name__}")

    def call(self, node: ast.Call) -> Any:
        func = node.func
        if not (isinstance(func, ast.Name) and func.id in _CONTAINER_CALLS and func.id not in self.names):
            raise self.fail(node, "the only calls read are dict(), list(), tuple() and set()")
        if len(node.args) > 1 or any(isinstance(a, ast.Starred) for a in node.args):
            raise self.fail(node, f"{func.id}() takes at most one positional argument here")
        if func.id != "dict":
            if node.keywords:
                raise self.fail(node, f"{func.id}() takes no keyword arguments")
            items = self.value(node.args[0]) if node.args else []
            if not isinstance(items, (list, str, dict)):
                raise self.fail(node, f"{func.id}() needs a list, tuple, set, dict or string")
            items = list(items)
            return _unique(items) if func.id == "set" else items
        out = dict(self.mapping(node.args[0])) if node.args else {}
        for keyword in node.keywords:
            if keyword.arg is None:
                out.update(self.mapping(keyword.value))
            else:
                out[keyword.arg] = self.value(keyword.value)
        return out


def _unique(items: list) -> list:
    out: list = []
    for item in items:
        if item not in out:
            out.append(item)
    return out


@dataclass(frozen=True)
class Origin:
    """Where a top-level key was last assigned (for the not-converted list)."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


def read_mmcv_config(path: str | Path, _chain: tuple[Path, ...] = ()) -> tuple[dict[str, Any], dict[str, Origin]]:
    """The config's top-level keys with its `_base_` files merged in (mmcv 1.x rules), and their origins."""
    shown = Path(os.path.normpath(path))
    resolved = shown.resolve()
    if resolved in _chain:
        cycle = " -> ".join(str(p) for p in (*_chain, resolved))
        raise RecipeError(f"_base_ files include each other: {cycle}")
    if not shown.is_file():
        raise RecipeError(f"mmcv config not found: {shown}")
    reader = _Reader(shown)
    reader.read()
    names = {k: v for k, v in reader.names.items() if not k.startswith("__")}
    bases = names.pop(BASE_KEY, [])
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise RecipeError(
            f"{shown}:{reader.lines[BASE_KEY]}: _base_ must be a file path or a list of paths, got {bases!r}"
        )
    values: dict[str, Any] = {}
    origins: dict[str, Origin] = {}
    for base in bases:
        base_path = shown.parent / base
        if base_path.suffix != ".py":
            raise RecipeError(f"{shown}:{reader.lines[BASE_KEY]}: _base_ {base!r}: only .py configs are read")
        if not base_path.is_file():
            raise RecipeError(
                f"{shown}:{reader.lines[BASE_KEY]}: _base_ file not found: {base} (looked for {base_path})"
            )
        base_values, base_origins = read_mmcv_config(base_path, (*_chain, resolved))
        values = merge(values, base_values)
        origins.update(base_origins)
    origins.update({k: Origin(str(shown), reader.lines[k]) for k in names})
    return merge(values, names), origins
