"""Loading and saving weights: our checkpoints and stock YOLOv5 ``.pt`` files, both without running code."""

from __future__ import annotations

from pathlib import Path

from ..models import StitchModel, build_model
from .checkpoint import atomic_save, is_own_checkpoint, save_checkpoint
from .stock import is_stock_checkpoint, load_pickle_safely, read_stock_checkpoint


def load_model(path: str | Path, device: str | None = "cpu") -> StitchModel:
    """Load a yolostitch checkpoint or a stock YOLOv5 ``.pt`` into a :class:`StitchModel` (eval mode, fp32)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    obj = load_pickle_safely(path)
    if is_own_checkpoint(obj):
        config, state, names, kind = obj["config"], obj["model"], obj.get("names") or {}, "yolostitch"
        meta = {k: v for k, v in obj.items() if k in ("epoch", "date", "format_version")}
    elif is_stock_checkpoint(obj):
        stock = read_stock_checkpoint(obj, path)
        config, state, names, kind, meta = stock.config, stock.state_dict, stock.names, "stock YOLOv5", stock.meta
    else:
        keys = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
        raise RuntimeError(f"{path}: neither a yolostitch checkpoint nor a stock YOLOv5 one (found {keys})")
    model = build_model(config)
    missing, unexpected = _compare_keys(model.state_dict(), state)
    if missing or unexpected:
        raise RuntimeError(f"{path}: the {kind} weights do not fit the architecture in its own config: "
                           f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                           f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}")
    model.load_state_dict(state, strict=True)
    if names:
        model.names = {int(k): str(v) for k, v in names.items()}
    model.checkpoint = {"path": str(path), "kind": kind, **meta}
    return model.to(device).eval() if device else model.eval()


def _compare_keys(expected: dict, given: dict) -> tuple[list[str], list[str]]:
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    shapes = [f"{k} {tuple(given[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
              if k in given and given[k].shape != v.shape]
    return missing + shapes, unexpected


__all__ = ["atomic_save", "load_model", "load_pickle_safely", "read_stock_checkpoint", "save_checkpoint"]
