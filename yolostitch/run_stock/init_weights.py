"""Stock YOLOv5 starting from a checkpoint, as a stock user's ``train.py --weights yolov5n.pt`` does, without
unpickling code.

Stock's train (detection and ``segment/train.py`` alike) does, for ``--weights W.pt``::

    ckpt = torch.load of W, on the CPU (an unpickling of the whole file)
    model = Model(cfg or ckpt['model'].yaml, ch=3, nc=nc, anchors=hyp.get('anchors'))
    csd = intersect_dicts(ckpt['model'].float().state_dict(), model.state_dict(), exclude=['anchor'])
    model.load_state_dict(csd, strict=False)

``torch.load`` there would unpickle the whole stock model class (code). Here that one call, for that one file,
returns what stock reads of it instead: ``ckpt['model']`` as an inert object with the checkpoint's ``yaml`` and
its state dict, read by our restricted unpickler (:func:`..weights.load_pickle_safely`). Every line after it is
stock's own; ``intersect_dicts`` is wrapped only to count what stock transferred. Nothing is downloaded: the
path must be a local file.
"""

from __future__ import annotations

import os
import types
from pathlib import Path
from typing import Any

import torch

from ..errors import WeightsError


class CheckpointModel:
    """What stock's train reads of ``ckpt['model']`` when starting from weights: ``.yaml`` and
    ``.float().state_dict()``."""

    def __init__(self, config: dict[str, Any], state: dict[str, torch.Tensor]):
        self.yaml = config
        self._state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}

    def float(self) -> CheckpointModel:
        return self

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self._state)


def read_for_stock(path: str | Path) -> CheckpointModel:
    """``ckpt['model']`` of a stock YOLOv5 checkpoint (its ``model`` entry, which stock's train reads, else its
    ``ema``), or of a yolostitch checkpoint (its config and weights; our Detect layout is stock's)."""
    from ..weights import load_pickle_safely
    from ..weights.checkpoint import is_own_checkpoint
    from ..weights.stock_checkpoint import StockObject, is_stock_checkpoint, module_state_dict

    obj = load_pickle_safely(path)
    if is_own_checkpoint(obj):
        return CheckpointModel(dict(obj["config"]), obj["model"])
    if is_stock_checkpoint(obj):
        model = obj["model"] if isinstance(obj.get("model"), StockObject) else obj["ema"]
        if not isinstance(getattr(model, "yaml", None), dict):
            raise WeightsError(f"{path}: the stock model in it has no 'yaml' config dict")
        return CheckpointModel(dict(model.yaml), module_state_dict(model))
    raise WeightsError(f"{path}: neither a stock YOLOv5 nor a yolostitch checkpoint; stock cannot start from it")


def start_from(st: types.ModuleType, path: str | Path) -> dict[str, int]:
    """Prepare stock's train module ``st`` (``yolov5.train`` or ``yolov5.segment.train``) to start from ``path``;
    return the dict that gets ``transferred`` and ``total`` (stock's own "Transferred N/M items") once it has.

    Call after ``_stub_network`` (this wraps the ``torch.load`` it installs), and give stock ``opt.weights =
    str(path)``."""
    path = Path(path).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"--init {path}: no such file (stock starts from a local .pt; nothing is downloaded)")
    counts: dict[str, int] = {}
    real_intersect = st.intersect_dicts

    def intersect_dicts(da, db, exclude=()):
        kept = real_intersect(da, db, exclude)
        counts.update(transferred=len(kept), total=len(db))
        return kept

    st.intersect_dicts = intersect_dicts
    inner = torch.load

    def load(f, *args, **kwargs):
        if isinstance(f, (str, os.PathLike)) and Path(f).resolve() == path:
            torch.load = inner  # the restricted reader's own torch.load(weights_only=True) is the real one
            try:
                return {"model": read_for_stock(path), "ema": None, "optimizer": None, "epoch": -1}
            finally:
                torch.load = load
        return inner(f, *args, **kwargs)

    torch.load = load
    return counts
