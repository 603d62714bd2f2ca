"""Loading and saving weights: our checkpoints and stock YOLOv5 ``.pt`` files, both without running code."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..models import StitchModel, build_model
from ..errors import ConfigError, WeightsError
from .checkpoint import atomic_save, check_own_checkpoint, checkpoint_dict, is_own_checkpoint, save_checkpoint
from .classes import Names, describe_transfer, detect_rows, match_class_names, name_list
from .stock_checkpoint import is_stock_checkpoint, load_pickle_safely, read_stock_checkpoint

LOGGER = logging.getLogger("yolostitch")


@dataclass
class Weights:
    """What a weights file holds, whichever kind it is."""

    config: dict[str, Any]
    state: dict[str, torch.Tensor]
    names: dict[int, str]
    kind: str  # "yolostitch" or "stock YOLOv5"
    meta: dict[str, Any] = field(default_factory=dict)


def read_checkpoint(path: str | Path) -> Any:
    """What a weights file holds, as saved: the one reader every checkpoint goes through (``read_weights``,
    ``--resume``). ``torch.load(weights_only=True)`` with stock classes as inert stand-ins; anything else a
    pickle names is refused before it can run. Our own checkpoints are checked to have the structure we write
    (:func:`.checkpoint.check_own_checkpoint`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    obj = load_pickle_safely(path)
    return check_own_checkpoint(obj, path) if is_own_checkpoint(obj) else obj


def read_weights(path: str | Path) -> Weights:
    """Read a yolostitch checkpoint or a stock YOLOv5 ``.pt`` without running any code from it."""
    path = Path(path)
    obj = read_checkpoint(path)
    if is_own_checkpoint(obj):
        meta = {k: v for k, v in obj.items() if k in ("epoch", "date", "format_version", "features", "plugins")}
        return Weights(obj["config"], obj["model"], obj.get("names") or {}, "yolostitch", meta)
    if is_stock_checkpoint(obj):
        stock = read_stock_checkpoint(obj, path)
        return Weights(stock.config, stock.state_dict, stock.names, "stock YOLOv5", stock.meta)
    keys = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
    raise WeightsError(f"{path}: neither a yolostitch checkpoint nor a stock YOLOv5 one (found {keys})")


def load_model(path: str | Path, device: str | None = "cpu") -> StitchModel:
    """Load a yolostitch checkpoint or a stock YOLOv5 ``.pt`` into a :class:`StitchModel` (eval mode, fp32)."""
    weights = read_weights(path)
    config, state, names, kind, meta = weights.config, weights.state, weights.names, weights.kind, weights.meta
    try:
        model = build_model(config)
    except ConfigError as e:
        if not meta.get("plugins"):
            raise WeightsError(f"{path}: the architecture in its config cannot be built ({e})") from None
        from ..plugins import plugin_hint

        raise WeightsError(f"{path} was trained with plugins {meta['plugins']}: pass {plugin_hint(meta['plugins'])} "
                           f"to load it ({str(e).split('. ')[0]})") from None
    missing, shapes, unexpected = _compare_keys(model.state_dict(), state)
    if missing or shapes or unexpected:
        raise WeightsError(f"{path}: the {kind} weights do not fit the architecture in its own config: "
                           f"missing {_first(missing)}, wrong shapes {_first(shapes)}, "
                           f"unexpected {_first(unexpected)}")
    model.load_state_dict(state, strict=True)
    if names:
        model.names = {int(k): str(v) for k, v in names.items()}
    model.checkpoint = {"path": str(path), "kind": kind, **meta}
    return model.to(device).eval() if device else model.eval()


def transfer_weights(model: StitchModel, state: dict[str, torch.Tensor],
                     source_config: dict[str, Any] | None = None, source_names: Names | None = None,
                     target_names: Names | None = None) -> dict[str, Any]:
    """Load the tensors of ``state`` that fit ``model`` (same name and shape; anchors excepted, they come from the
    config), as stock's ``--weights`` does; the rest keep their fresh initialisation.

    One step further than stock: when only the class count differs, the Detect convs' box and objectness rows
    (the first 5 outputs of each anchor) still transfer and only the class rows start fresh. Given both
    ``source_names`` (the checkpoint's classes) and ``target_names`` (the data's), the rows of the classes whose
    names match transfer too (:mod:`.classes`); with no name in common the transfer is the one above. And when the
    model's backbone has another length than ``source_config``'s (FeatureInput rows in place of an image
    backbone), head rows are paired by position (:func:`layer_correspondence`) so the neck and heads still load.
    Returns ``loaded`` (whole tensors), ``partial`` (Detect convs with some rows), ``total`` and ``classes`` (the
    target's class names whose rows came from the checkpoint by name).
    """
    if source_config is not None and len(source_config["backbone"]) != len(model.yaml["backbone"]):
        heads, _ = layer_correspondence(model.yaml, source_config)
        state = _renumber(state, {src: dst for dst, src in heads.items()})
    own = model.state_dict()
    matching = {k: v for k, v in state.items() if k in own and v.shape == own[k].shape and not k.endswith("anchors")}
    partial, used = 0, False
    classes = match_class_names(target_names, source_names) if source_names and target_names else {}
    if "det" in model.heads:
        index = model.heads["det"]
        head = model.model[index]
        source_nc = len(source_names or ())
        bias = state.get(f"model.{index}.m.0.bias")
        if bias is None or bias.shape[0] % head.na or bias.shape[0] // head.na < 5 + source_nc:
            classes = {}  # the checkpoint's Detect is not laid out for its own names: no class rows by name
        identity = source_nc == head.nc and classes == {i: i for i in range(head.nc)}  # stock's copy is the same
        for k, v in state.items():
            if not k.startswith(f"model.{index}.m.") or k not in own:
                continue
            if k in matching and (identity or not classes):
                used = used or identity
                continue
            rows = detect_rows(own[k], v, head.na, source_nc, classes)
            if rows is not None:
                matching[k] = rows
                partial += 1
                used = used or bool(classes)
    model.load_state_dict(matching, strict=False)
    matched = [name_list(target_names)[t] for t in sorted(classes)] if used else []
    if matched:
        LOGGER.debug("class rows transferred by name: %s", ", ".join(matched))
    return {"loaded": len(matching) - partial, "partial": partial, "total": len(own), "classes": matched}


def layer_correspondence(target: dict[str, Any], source: dict[str, Any]) -> tuple[dict[int, int], dict[int, int]]:
    """Pair two configs whose head rows agree but whose backbones differ (a FeatureInput model and the image
    model it is stitched from): ``({target head layer: source layer}, {target backbone layer: source layer})``.

    Head row j pairs with head row j while the module names agree. The backbone pairs come from the head rows'
    inputs: where a paired row reads target backbone layer t and the source row reads s at that place, t
    stands in for s (e.g. FeatureInput layer 0 for stock layer 4).
    """
    tb, sb = len(target["backbone"]), len(source["backbone"])
    heads: dict[int, int] = {}
    backbone: dict[int, int] = {}
    for j, (t_row, s_row) in enumerate(zip(target.get("head") or [], source.get("head") or [])):
        if t_row[2] != s_row[2]:
            break
        heads[tb + j] = sb + j
        t_from = t_row[0] if isinstance(t_row[0], list) else [t_row[0]]
        s_from = s_row[0] if isinstance(s_row[0], list) else [s_row[0]]
        for t, s in zip(t_from, s_from):
            t, s = (t if t >= 0 else tb + j + t), (s if s >= 0 else sb + j + s)
            if t < tb and s < sb:
                backbone.setdefault(t, s)
    return heads, backbone


def _renumber(state: dict[str, torch.Tensor], layers: dict[int, int]) -> dict[str, torch.Tensor]:
    """``model.{i}.rest`` -> ``model.{layers[i]}.rest`` for the mapped layers; the other tensors are dropped."""
    out = {}
    for k, v in state.items():
        parts = k.split(".", 2)
        if len(parts) == 3 and parts[0] == "model" and parts[1].isdigit() and int(parts[1]) in layers:
            out[f"model.{layers[int(parts[1])]}.{parts[2]}"] = v
    return out


def _compare_keys(expected: dict, given: dict) -> tuple[list[str], list[str], list[str]]:
    """(missing keys, shape mismatches as 'key (given) vs (expected)', unexpected keys)."""
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    shapes = [f"{k} {tuple(given[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
              if k in given and given[k].shape != v.shape]
    return missing, shapes, unexpected


def _first(items: list[str]) -> str:
    return f"{items[:5]}{'...' if len(items) > 5 else ''}"


__all__ = ["Weights", "atomic_save", "checkpoint_dict", "describe_transfer", "layer_correspondence", "load_model",
           "load_pickle_safely", "match_class_names", "read_checkpoint", "read_stock_checkpoint", "read_weights",
           "save_checkpoint", "transfer_weights"]
