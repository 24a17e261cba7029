"""Command line: `accel-trainer RECIPE ...` trains; `accel-trainer COMMAND ...` runs a tool.

Each command is a module of `commands/` with a `DESCRIPTION`, `add_arguments(parser)` and
`run(args) -> int`; this module only picks one and builds its parser. User errors (RecipeError)
print one line naming the problem and exit with code 2, without a traceback, and so do the
OSErrors of a folder that is not writable or a full disk; anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Any, Protocol, cast

from .errors import RecipeError
from .files import WRITE_FAILURES

# The tools by command name -> their module in `commands/`; any other first argument is a recipe to train.
COMMANDS: dict[str, str] = {
    "schedule": "schedule",
    "export": "export",
    "predict": "predict",
    "visualize": "visualize",
    "import-mmcv": "import_mmcv",
    "plot": "plot",
}
TRAIN = "train"


class Command(Protocol):
    """What a module of `commands/` provides; its heavy imports wait for `run`, so `--help` stays light."""

    DESCRIPTION: str

    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


def version_text() -> str:
    """The package and the versions that decide its behaviour, read from metadata (nothing imported)."""
    from importlib.metadata import PackageNotFoundError, version

    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    deps = ", ".join(f"{name} {installed(name)}" for name in ("torch", "torchvision", "timm", "accelerate"))
    from . import __version__

    return f"accel-trainer {__version__} ({deps}; Python {sys.version.split()[0]})"


class VersionAction(argparse.Action):
    """`--version`, its text read only when asked for."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help="print the versions and exit")

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        print(version_text())
        parser.exit()


def command_parser(name: str | None) -> tuple[argparse.ArgumentParser, Command]:
    """The parser and module of tool `name`, or of training when `name` is None."""
    module = TRAIN if name is None else COMMANDS[name]
    command = cast(Command, importlib.import_module(f".commands.{module}", __package__))
    if name is None:
        parser = argparse.ArgumentParser(
            prog="accel-trainer",
            description=f"{command.DESCRIPTION} Tools: accel-trainer {{{','.join(COMMANDS)}}} --help.",
        )
        parser.add_argument("--version", action=VersionAction)
    else:
        parser = argparse.ArgumentParser(prog=f"accel-trainer {name}", description=command.DESCRIPTION)
    command.add_arguments(parser)
    return parser, command


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    name = argv.pop(0) if argv and argv[0] in COMMANDS else None
    parser, command = command_parser(name)
    args = parser.parse_args(argv)
    try:
        return command.run(args)
    except RecipeError as exc:
        print(f"accel-trainer: error: {exc}", file=sys.stderr)
        return RecipeError.exit_code
    except OSError as exc:
        if exc.errno not in WRITE_FAILURES:
            raise
        # The machine's state, not a bug: a folder not writable, a full disk, met where no check named it.
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"accel-trainer: error: {where}{WRITE_FAILURES[exc.errno]}", file=sys.stderr)
        return RecipeError.exit_code
    except KeyboardInterrupt:
        print("accel-trainer: interrupted", file=sys.stderr)
        return 130
