"""The typed builder: recipe tables become section dataclasses, checked by their type hints.

Unknown keys and wrong types are refused by dotted path as a table is read (`build`); each section
then checks its own values in `check(path)` (`check_sections`). Fields marked
`metadata={"internal": True}` are not recipe keys: never read from a table, never written back.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal, Union

from ..errors import RecipeError, did_you_mean
from .checks import check_keys, join_path


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (list, dict):
        return getattr(tp, "__name__", str(tp)) if origin is None else str(tp).replace("typing.", "")
    if dataclasses.is_dataclass(tp):
        return "a table"
    return getattr(tp, "__name__", str(tp))


def _check_value(tp: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        options = [a for a in typing.get_args(tp) if a is not type(None)]
        for option in options[:-1]:
            try:
                return _check_value(option, value, path)
            except RecipeError:
                continue
        return _check_value(options[-1], value, path)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise RecipeError(f"{path} must be a table, got {value!r}")
        return build(tp, value, path)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise RecipeError(
                f"{path} = {value!r} is not allowed{did_you_mean(str(value), map(str, allowed))}; "
                f"expected one of: {', '.join(map(repr, allowed))}"
            )
        return value
    if origin is list:
        if not isinstance(value, list):
            raise RecipeError(f"{path} must be a list, got {value!r}")
        (item_tp,) = typing.get_args(tp) or (Any,)
        return [_check_value(item_tp, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise RecipeError(f"{path} must be a table, got {value!r}")
        return value
    if tp is Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if (tp in (int, float) and isinstance(value, bool)) or not isinstance(value, tp):
        raise RecipeError(f"{path} = {value!r} has the wrong type: expected {_type_name(tp)}")
    if tp is int and not -(2**63) <= value < 2**63:
        # Python's TOML reader takes any integer; TOML itself (and torch's counters) stop at 64 bits.
        raise RecipeError(f"{path} = {value!r} is outside TOML's 64-bit integer range (-2**63 to 2**63 - 1)")
    return value


def build(cls: type, data: dict, path: str) -> Any:
    """Create dataclass `cls` from a dict, rejecting unknown keys and wrong types by dotted path."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    check_keys(data, fields, path)
    kwargs = {name: _check_value(hints[name], value, join_path(path, name)) for name, value in data.items()}
    missing = [
        f.name
        for f in fields.values()
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING and f.name not in kwargs
    ]
    if missing:
        raise RecipeError(f"{path} needs {', '.join(missing)}")
    return cls(**kwargs)


def field_names(cls: type) -> tuple[str, ...]:
    """A section's keys in declaration order, for code that must accept exactly these."""
    return tuple(f.name for f in dataclasses.fields(cls) if not f.metadata.get("internal"))


def check_sections(obj: Any, path: str) -> None:
    """Run every section's own `check(path)`, nested sections after their parent, defaults included."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value) and not f.metadata.get("internal"):
            where = join_path(path, f.name)
            check = getattr(value, "check", None)
            if check is not None:
                check(where)
            check_sections(value, where)


def to_plain(obj: Any) -> Any:
    """A section (or any value in one) as plain TOML-able data, None values and internal fields left out."""
    if dataclasses.is_dataclass(obj):
        return {
            f.name: to_plain(getattr(obj, f.name))
            for f in dataclasses.fields(obj)
            if not f.metadata.get("internal") and getattr(obj, f.name) is not None
        }
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, list):
        return [to_plain(v) for v in obj]
    return obj
