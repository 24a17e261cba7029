"""The checks on recipe values, in one place: every section, open table and recipe-like file uses them.

Each failure is a `RecipeError` that names the dotted key path, the value and what was expected.
`Table` reads the keys of an open table (one whose keys depend on a chosen type, such as
`[lr_config]`) with the same checks; typed sections get theirs from `builder.build`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from ..errors import RecipeError, did_you_mean


def join_path(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def is_number(value: object) -> bool:
    """An int or float as TOML gives it (booleans are not numbers here)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def require(ok: bool, path: str, value: Any, expected: str) -> None:
    """Raise `path = value: expected` unless `ok`."""
    if not ok:
        raise RecipeError(f"{path} = {value!r} {expected}")


def positive(value: int | float, path: str, allow_zero: bool = False) -> None:
    require(value > 0 or (allow_zero and value == 0), path, value, "must be >= 0" if allow_zero else "must be > 0")


def between(value: int, path: str, low: int, high: int, why: str = "") -> None:
    """An integer in [low, high]; `why` says where the bound comes from."""
    require(low <= value <= high, path, value, f"must be between {low:_} and {high:_}{why}")


def fraction(value: float, path: str) -> None:
    """A probability or ratio in [0, 1]."""
    require(0.0 <= value <= 1.0, path, value, "must be between 0 and 1")


def finite_number(value: object, path: str) -> None:
    """A number in an open table (no section dataclass types it): not a string, not inf or nan."""
    if not is_number(value):
        raise RecipeError(f"{path} = {value!r}: expected a number")
    if not math.isfinite(value):  # type: ignore[arg-type]
        raise RecipeError(f"{path} = {value!r}: must be a finite number")


def check_keys(table: Mapping, allowed: Iterable[str], path: str) -> None:
    """Reject keys of `table` that are not in `allowed`, naming the dotted path and a suggestion."""
    allowed = list(allowed)
    for key in table:
        if key not in allowed:
            raise RecipeError(
                f"unknown key {join_path(path, key)!r}{did_you_mean(key, allowed)}; "
                f"allowed here: {', '.join(sorted(allowed)) or '(none)'}"
            )


def check_choice(value: object, choices: Iterable[str], path: str) -> None:
    """Reject a name that is not one of `choices`."""
    choices = list(choices)
    if value not in choices:
        raise RecipeError(
            f"{path} = {value!r} is not allowed{did_you_mean(str(value), choices)}; "
            f"expected one of: {', '.join(map(str, choices))}"
        )


REQUIRED = object()  # a `Table` default: the key must be present


class Table:
    """Typed reads from one open recipe table; every error names the dotted key path and the value.

    `context` says who needs a missing key (e.g. "policy 'step'").
    """

    def __init__(self, cfg: Mapping, path: str, context: str) -> None:
        self.cfg, self.path, self.context = cfg, path, context

    def where(self, key: str) -> str:
        return join_path(self.path, key)

    def fail(self, key: str, expected: str) -> RecipeError:
        if key not in self.cfg:
            return RecipeError(f"{self.where(key)} is missing: expected {expected}")
        return RecipeError(f"{self.where(key)} = {self.cfg[key]!r}: expected {expected}")

    def get(self, key: str, default: Any, expected: str) -> Any:
        if key in self.cfg:
            return self.cfg[key]
        if default is REQUIRED:
            raise RecipeError(f"{self.where(key)} is missing: {self.context} needs it (expected {expected})")
        return default

    def number(
        self, key: str, default: Any = REQUIRED, ok: Callable[[float], bool] | None = None, expected: str = "a number"
    ) -> Any:
        return self._typed(key, default, ok, expected, is_number, float)

    def integer(
        self, key: str, default: Any = REQUIRED, ok: Callable[[int], bool] | None = None, expected: str = "an integer"
    ) -> Any:
        return self._typed(key, default, ok, expected, is_int, int)

    def _typed(
        self,
        key: str,
        default: Any,
        ok: Callable[[Any], bool] | None,
        expected: str,
        is_kind: Callable[[object], bool],
        convert: Callable[[Any], Any],
    ) -> Any:
        value = self.get(key, default, expected)
        if value is None and default is None:
            return None
        if not is_kind(value) or (ok is not None and not ok(value)):
            raise self.fail(key, expected)
        return convert(value)

    def boolean(self, key: str, default: bool) -> bool:
        value = self.get(key, default, "true or false")
        if not isinstance(value, bool):
            raise self.fail(key, "true or false")
        return value

    def choice(self, key: str, choices: Sequence[str], default: str | None) -> Any:
        value = self.get(key, default, f"one of {', '.join(choices)}")
        if value is None and default is None:
            return None
        check_choice(value, choices, self.where(key))
        return value

    def numbers(self, key: str, default: Any = REQUIRED, expected: str = "a list of numbers") -> list[float]:
        value = self.get(key, default, expected)
        if not isinstance(value, (list, tuple)) or not all(is_number(v) for v in value):
            raise self.fail(key, expected)
        return [float(v) for v in value]

    def number_or_numbers(self, key: str, default: Any = REQUIRED) -> float | list[float]:
        """mmcv's per-group arguments: one number for all groups, or one per group."""
        expected = "a number, or a list with one number per param group"
        value = self.get(key, default, expected)
        if is_number(value):
            return float(value)
        return self.numbers(key, default, expected)
