"""User-facing errors: the CLI prints these as one plain message and exits with code 2."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping


class RecipeError(Exception):
    """Something the user wrote (a recipe, a flag, a file path) is wrong.

    The message names the place (file, dotted key path or value) and what was expected.
    """

    exit_code = 2

    def __init__(self, message: str = "") -> None:
        # A DataLoader worker's error comes back re-raised as RecipeError("Caught RecipeError in
        # DataLoader worker ...\nOriginal Traceback ...\n...RecipeError: <message>"): keep the message.
        if message.startswith("Caught RecipeError") and "RecipeError: " in message:
            message = message.rsplit("RecipeError: ", 1)[1].strip()
        super().__init__(message)


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """Return ' (did you mean "x"?)' for the closest candidate, or ''."""
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.5)
    return f' (did you mean "{close[0]}"?)' if close else ""


def join_path(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


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


def is_number(value: object) -> bool:
    """An int or float as TOML gives it (booleans are not numbers here)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
