"""Stock YOLOv5-seg (the ``yolov5`` package's ``segment/train.py`` and ``segment/val.py``) as a reference row.

Runs like the detection reference in :mod:`.runner`: in a child process (``python -m yolostitch.run_stock.segment
SPEC.json``, started by :func:`.runner.run_child`), offline, with stock's network/account hooks stubbed, on a
polygon export of our data (:func:`.data.export_segmentation`). Stock-seg's training loop has its callbacks
commented out, so the metrics are taken from its own ``segment/val.py`` ``run`` as the loop calls it: each
epoch on the EMA weights, then once more on ``best.pt``. Those are the numbers stock logs to results.csv.
"""

from __future__ import annotations

import logging
import sys
import time
import types
from pathlib import Path
from typing import Any, Callable

from .importer import import_stock_yolo, stock_yaml_dir
from .runner import _stand_ins, _stub_network, child_main, load_stock_weights, stock_train_options

# the 12 values segment/val.py's run returns first, in its order
VAL_KEYS = ("box_precision", "box_recall", "box_map50", "box_map", "mask_precision", "mask_recall", "mask_map50",
            "mask_map", "val_box_loss", "val_seg_loss", "val_obj_loss", "val_cls_loss")


def stock_segment_yaml(cfg: str | Path) -> Path:
    """Stock's own copy of a YOLOv5-seg model YAML (``models/segment/yolov5n-seg.yaml`` ...)."""
    path = stock_yaml_dir() / "segment" / Path(cfg).name
    if not path.is_file():
        raise FileNotFoundError(f"stock YOLOv5 has no segmentation model {Path(cfg).name} (looked in {path.parent})")
    return path


def _record_validation(sst: types.ModuleType) -> dict[str, list]:
    """Record every result of stock's ``segment/val.py`` ``run`` called by ``sst`` (stock-seg's train module),
    and how many came before training ended (stock strips the optimizer from its checkpoints right after)."""
    record: dict[str, list] = {"calls": [], "during_training": []}
    real_run, real_strip = sst.validate.run, sst.strip_optimizer

    def run(*args, **kwargs):
        out = real_run(*args, **kwargs)
        record["calls"].append([float(v) for v in out[0]])
        return out

    def strip_optimizer(*args, **kwargs):
        if not record["during_training"]:
            record["during_training"] = list(record["calls"])
        return real_strip(*args, **kwargs)

    sst.validate = types.SimpleNamespace(run=run)  # train() uses only validate.run
    sst.strip_optimizer = strip_optimizer
    return record


def train_stock_segment(spec: dict[str, Any], prepare: Callable | None = None) -> dict[str, Any]:
    """Train stock YOLOv5-seg ``spec["cfg"]`` (a stock seg YAML name) with ``spec``'s recipe;
    return the final epoch's EMA validation (box and mask P, R, mAP50, mAP50-95, as results.csv logs them),
    stock's re-validation of best.pt, the wall time and the run directory.

    ``spec``: cfg, data (a polygon data YAML), hyp, epochs, batch_size, imgsz, device, workers, seed, project,
    name, and optionally init (a local checkpoint stock starts from, as with its ``--weights``; see
    :mod:`.init_weights`; ``transferred`` then holds stock's own count). ``prepare(module)`` gets stock's
    ``yolov5.segment.train`` module before the run.
    """
    import_stock_yolo()
    _stand_ins()
    import yolov5.segment.train as sst

    logging.getLogger("yolov5").setLevel(logging.INFO)  # the importer quiets stock; show its training log
    run_dir = Path(spec["project"]) / spec.get("name", "stock-seg")
    _stub_network(run_dir, sst)
    cfg = stock_segment_yaml(spec["cfg"])
    record = _record_validation(sst)
    if prepare is not None:
        prepare(sst)
    opt, transferred = stock_train_options(sst, spec, cfg, "stock-seg")
    start = time.perf_counter()
    sst.main(opt)
    wall = time.perf_counter() - start
    during = record["during_training"] or record["calls"]
    if not during:
        raise RuntimeError(f"stock YOLOv5-seg finished without validating (log in {opt.save_dir})")
    after = record["calls"][len(during):]
    return {**dict(zip(VAL_KEYS, during[-1])), "best_pt": after[0][:8] if after else None, "wall_s": wall,
            "save_dir": str(opt.save_dir), "last": str(Path(opt.save_dir) / "weights" / "last.pt"),
            "cfg": str(cfg), "transferred": transferred}


def load_stock_segment_weights(path: str | Path, cfg: str | Path):
    """Stock's own fp32 eval-mode ``SegmentationModel`` of ``cfg`` with the weights of checkpoint ``path``."""
    return load_stock_weights(path, cfg, "SegmentationModel")


def stock_segmenter(model, imgsz: int) -> Callable:
    """One image (BGR array) -> stock's detections and masks as stock ``segment/predict.py --retina-masks``
    makes them: letterbox to a stride multiple, forward, NMS with 32 mask coefficients (conf 0.25, IoU 0.45,
    max 1000), boxes scaled back and masks built at the image's own resolution (what our detector returns)."""
    import numpy as np
    import torch
    from yolov5.utils.augmentations import letterbox
    from yolov5.utils.general import non_max_suppression, scale_boxes
    from yolov5.utils.segment.general import process_mask_native

    stride = int(model.stride.max())

    @torch.no_grad()
    def segment(image, path=None):
        padded = letterbox(image, imgsz, stride=stride, auto=True)[0]
        x = torch.from_numpy(np.ascontiguousarray(padded[..., ::-1].transpose(2, 0, 1))).float()[None] / 255
        pred, proto = model(x)[:2]
        det = non_max_suppression(pred, 0.25, 0.45, max_det=1000, nm=32)[0]
        if not len(det):  # as predict.py: masks only for an image with detections
            return det[:, :6], torch.zeros((0, *image.shape[:2]))
        det[:, :4] = scale_boxes(x.shape[2:], det[:, :4], image.shape).round()
        masks = process_mask_native(proto[0], det[:, 6:], det[:, :4], image.shape[:2])
        return det[:, :6], masks

    return segment


def _child_main(spec_path: str) -> None:
    """Child process: train stock-seg, then measure its final weights the way compare.py measures ours."""
    child_main(spec_path, train_stock_segment, load_stock_segment_weights, stock_segmenter)


if __name__ == "__main__":
    _child_main(sys.argv[1])
