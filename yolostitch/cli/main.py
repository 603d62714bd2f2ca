"""``yolostitch`` console script: one sub-command per module of this package."""

from __future__ import annotations

import argparse
import re
import sys
import traceback
from types import ModuleType
from typing import Sequence

from ..errors import is_user_error
from . import check_data, compare, detect, export, extract, info, train, val
from .console import show_library_log

COMMANDS = {"train": train, "val": val, "detect": detect, "extract": extract, "info": info, "check-data": check_data,
            "export": export, "compare": compare}
PLUGIN_COMMANDS = ("train", "val", "detect", "export")  # the commands that build models from configs/checkpoints


def summary(module: ModuleType) -> str:
    """A command module's one-line help: its docstring's first line as plain text (the reST markup and the
    ``yolostitch <command>`` / ``<script>.py`` prefix, which the help shows anyway, left out)."""
    line = (module.__doc__ or "").strip().splitlines()[0] if (module.__doc__ or "").strip() else ""
    line = re.sub(r"^``yolostitch [\w-]+``( / ``\w+\.py``)?: ", "", line)
    line = line.replace("``", "")
    return line[:1].upper() + line[1:]


def build_parser() -> argparse.ArgumentParser:
    """Every sub-command's flags (the README's command lines are checked against it)."""
    parser = argparse.ArgumentParser(prog="yolostitch", description="YOLOv5 model stitching")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, module in COMMANDS.items():
        command = sub.add_parser(name, help=summary(module), description=summary(module))
        module.add_arguments(command)
        if name in PLUGIN_COMMANDS:
            command.add_argument("--plugin", action="append", default=[], metavar="FILE.py|MODULE",
                                 help="load this plugin first (a .py file or a module name) to add its tasks and "
                                      "heads; repeat for several. Checkpoints trained with one need it again")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. A mistake in the user's input (our error types, a missing file) is one line on stderr
    and exit code 2; anything else is a bug or an accident of the machine and keeps its traceback.

    Under torchrun, a process that failed has left its process group without waiting for the others
    (:func:`~yolostitch.engine.distributed.process_group`); it then exits at once, so that torchrun stops the
    other processes instead of letting them wait in a collective for the group's timeout."""
    args = build_parser().parse_args(argv)
    show_library_log()
    try:
        if getattr(args, "plugin", None):
            from ..plugins import load_plugins

            load_plugins(args.plugin)
        return COMMANDS[args.command].run(args)
    except Exception as e:
        from ..engine import distributed

        if is_user_error(e):
            print(f"yolostitch {args.command}: error: {e}", file=sys.stderr)
            code = 2
        elif distributed.abandoned():
            traceback.print_exc()
            code = 1
        else:
            raise
        if distributed.abandoned():
            distributed.exit_now(code)
        return code


if __name__ == "__main__":
    sys.exit(main())
