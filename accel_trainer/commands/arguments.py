"""Arguments several commands share: a recipe with its `--set` overrides, and `--progress`."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from ..recipe.reading import parse_override

if TYPE_CHECKING:
    from ..recipe.load import LoadedRecipe


def add_recipe_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="recipe TOML file")
    parser.add_argument(
        "--set",
        dest="overrides",
        metavar="KEY=VALUE",
        nargs="+",
        action="extend",
        help="override recipe keys, VALUE in TOML syntax: --set optimizer.lr=0.01 'data.train.root=\"/data/x\"'",
    )


def add_progress_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bars on stdout (default: when stdout is a terminal)",
    )


def load_args_recipe(
    args: argparse.Namespace,
    extra: dict[str, Any] | None = None,
    *,
    work_dir: str | None = None,
    check_files: bool = True,
) -> LoadedRecipe:
    """The recipe of `add_recipe_args`, its `--set` overrides applied, then `extra` over them.

    `load_recipe` is imported here, on first use: it pulls in torch, which `--help` must not.
    """
    from ..recipe.load import load_recipe

    overrides = dict(parse_override(item) for item in args.overrides or [])
    overrides.update(extra or {})
    return load_recipe(args.recipe, overrides, work_dir, check_files=check_files)
