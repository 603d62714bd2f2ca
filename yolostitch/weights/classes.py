"""Class-name-matched transfer of Detect's classification rows.

Stock's ``--weights`` keeps a Detect conv only when the class count is the same, so a 1-class ``person`` model
fine-tuned from a COCO checkpoint starts its person scores from zero although the checkpoint already scores
persons well. When class names match (case-insensitive, exact), the matched classes' rows of each Detect conv
are copied from the checkpoint's rows of the same names; the other classes keep their fresh initialisation.

Detect's conv output is laid out per anchor as ``[x, y, w, h, obj, cls0 .. cls(nc-1)]`` (stock's Segment
adds its mask coefficients after the classes), so a conv weight of shape ``(na * no, c, 1, 1)`` is viewed as
``(na, no, c, 1, 1)`` and rows are picked along the second axis.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch

Names = Mapping[int, str] | Sequence[str]


def name_list(names: Names) -> list[str]:
    """Class names in index order, from a ``{index: name}`` mapping or a list."""
    if isinstance(names, Mapping):
        return [str(names[i]) for i in sorted(names)]
    return [str(n) for n in names]


def match_class_names(target: Names, source: Names) -> dict[int, int]:
    """``{target class index: source class index}`` for every target class whose name (case-insensitive,
    surrounding spaces ignored) is a source class name; a name the source repeats pairs with its first index."""
    first: dict[str, int] = {}
    for i, name in enumerate(name_list(source)):
        first.setdefault(name.strip().lower(), i)
    return {t: first[name.strip().lower()] for t, name in enumerate(name_list(target))
            if name.strip().lower() in first}


def detect_rows(fresh: torch.Tensor, source: torch.Tensor, na: int, source_nc: int,
                classes: Mapping[int, int] | None) -> torch.Tensor | None:
    """A Detect conv tensor (weight or bias) for the model: ``fresh`` (its own initialisation) with the box and
    objectness rows of ``source`` and, for each ``{target class: source class}`` in ``classes``, that class's
    rows too. ``None`` when ``source`` does not have the per-anchor layout this needs."""
    if source.shape[1:] != fresh.shape[1:] or source.shape[0] % na or fresh.shape[0] % na:
        return None
    no_source = source.shape[0] // na
    if no_source < 5 or (classes and no_source < 5 + source_nc):
        return None  # (transfer_weights checks the class layout first, so this guards direct callers)
    rows = fresh.detach().clone().view(na, fresh.shape[0] // na, *fresh.shape[1:])
    theirs = source.detach().to(rows.dtype).view(na, no_source, *source.shape[1:])
    rows[:, :5] = theirs[:, :5]
    for t, s in (classes or {}).items():
        rows[:, 5 + t] = theirs[:, 5 + s]
    return rows.view_as(fresh)


def describe_transfer(counts: Mapping[str, Any], source: str) -> str:
    """One line for logs and the comparison table, e.g. ``342/349 tensors from yolov5n.pt, +6 Detect convs in
    part (box/obj rows, matched class rows), classes matched: person``."""
    text = f"{counts['loaded']}/{counts['total']} tensors from {source}"
    matched = list(counts.get("classes") or [])
    if counts.get("partial"):
        text += f", +{counts['partial']} Detect convs in part (box/obj rows{', matched class rows' if matched else ''})"
    if matched:
        shown = ", ".join(matched[:8]) + (f", ... ({len(matched)} in all)" if len(matched) > 8 else "")
        text += f", classes matched: {shown}"
    return text


__all__ = ["describe_transfer", "detect_rows", "match_class_names", "name_list"]
