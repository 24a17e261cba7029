"""The CLI's commands, one module each (`train` the default, the tools by name in `cli.COMMANDS`).

Each has a `DESCRIPTION`, `add_arguments(parser)` and `run(args) -> int`, and imports torch and
the heavy parts of the package inside its functions only, so `--help` answers at once.
`evaluate.py` is training's `--eval-only`; `arguments.py` holds the arguments several share.
"""
