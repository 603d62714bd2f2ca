"""``yolostitch`` console script: one sub-command per module of this package."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from . import check_data, compare, detect, export, extract, info, train, val

COMMANDS = {"train": train, "val": val, "detect": detect, "extract": extract, "info": info, "check-data": check_data,
            "export": export, "compare": compare}


def build_parser() -> argparse.ArgumentParser:
    """Every sub-command's flags (the README's command lines are checked against it)."""
    parser = argparse.ArgumentParser(prog="yolostitch", description="YOLOv5 model stitching")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, module in COMMANDS.items():
        module.add_arguments(sub.add_parser(name, help=(module.__doc__ or "").strip().splitlines()[0]))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command].run(args)
    except (FileNotFoundError, ValueError, RuntimeError) as e:  # user errors: one clear line, no traceback
        print(f"yolostitch {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
