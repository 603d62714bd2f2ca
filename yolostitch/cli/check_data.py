"""``yolostitch check-data``: scan a dataset, print a summary and one final JSON line."""

from __future__ import annotations

import argparse
import json
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="data YAML (a path or a built-in name such as shapes.yaml)")
    p.add_argument("--no-cache", action="store_true", help="rescan every file, ignoring and not writing caches")


def run(args: argparse.Namespace) -> int:
    from ..data.check import check_data

    summary = check_data(args.data, cache=not args.no_cache, out=sys.stdout)
    print(json.dumps(summary))
    return 0
