"""results.csv: one row per epoch under one header for the whole file.

Epochs do not all log the same columns: with ``--noval`` only the final epoch validates and brings the
``metrics/*`` columns. A row with columns the header lacks rewrites the file (atomically) under the union of
the columns, the earlier rows with empty cells there, so that every row has as many fields as the header
(``pandas.read_csv`` and results.png read it as it is meant). Columns keep stock's order: epoch, train/*,
metrics/*, lr/*.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

GROUPS = ("epoch", "train/", "metrics/", "lr/")


def _group(column: str) -> int:
    for i, prefix in enumerate(GROUPS):
        if column == prefix or (prefix.endswith("/") and column.startswith(prefix)):
            return i
    return len(GROUPS)


def read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """(header, rows) of a results.csv; ([], []) when absent. Cells beyond the header (a file written before
    the header was kept whole) are dropped."""
    if not path.exists():
        return [], []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        rows = [{k: v for k, v in r.items() if k is not None} for r in reader]
        return list(reader.fieldnames or []), rows


def _write(path: Path, header: list[str], rows: list[dict[str, Any]]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=header, restval="")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def append_row(path: Path, row: dict[str, Any]) -> None:
    """Add one epoch's row (floats to 6 significant digits); widen the header first if the row brings
    columns it lacks."""
    row = {k: f"{v:.6g}" if isinstance(v, float) else v for k, v in row.items()}
    header, rows = read_rows(path)
    new = [k for k in row if k not in header]
    if not header or new:
        order = {k: i for i, k in enumerate([*header, *new])}
        union = sorted(order, key=lambda k: (_group(k), order[k]))
        _write(path, union, [*rows, row])
        return
    with open(path, "a", newline="") as f:
        csv.DictWriter(f, fieldnames=header, restval="").writerow(row)


def truncate(path: Path, epochs: int) -> None:
    """Keep the rows of epochs < ``epochs`` (a killed run may have logged an epoch it did not checkpoint)."""
    header, rows = read_rows(path)
    kept = [r for r in rows if int(r["epoch"]) < epochs]
    if len(kept) != len(rows):
        _write(path, header, kept)


def epoch_metrics(path: Path, epoch: int) -> dict[str, float]:
    """The ``metrics/*`` values logged for ``epoch`` (0-based), prefix dropped; empty if it logged none."""
    _, rows = read_rows(path)
    for row in rows:
        if int(row["epoch"]) == epoch:
            return {k.removeprefix("metrics/"): float(v) for k, v in row.items() if k.startswith("metrics/") and v}
    return {}
