"""User-facing errors: the CLI prints these as one plain message and exits with code 2.

The checks that raise them on recipe values live in `recipe/checks.py`.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path


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


@contextmanager
def naming_file(path: str | Path) -> Iterator[None]:
    """Start the message of a RecipeError raised inside with `path` (the recipe it is about),
    unless the message names that file already or starts with another file (a `_base_` it includes)."""
    try:
        yield
    except RecipeError as exc:
        message = str(exc)
        named = str(path) in message or str(Path(path).resolve()) in message
        if not named and not Path(message.split(": ", 1)[0]).is_file():
            exc.args = (f"{path}: {message}",)
        raise
