"""Validation: letterboxed rect batches, NMS, matching in original-image pixels, stock-style report."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch.utils.data import DataLoader

from ..data.config import load_data_config
from ..data.dataset import MultiTaskDataset, collate, loader_workers, worker_init
from ..data.scan import scan_split
from ..weights import load_model
from .metrics import DetectionStats
from .plots import draw_batch, predictions_as_batch
from .postprocess import non_max_suppression, scale_boxes, xywh2xyxy
from .runs import increment_path, select_device


def val_loader(labels, imgsz: int, batch_size: int, stride: int, kpt_shape=None, workers: int = 8) -> DataLoader:
    dataset = MultiTaskDataset(labels, imgsz=imgsz, kpt_shape=kpt_shape, rect=True, batch_size=batch_size,
                               stride=stride, pad=0.5)
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=loader_workers(workers, batch_size),
                      collate_fn=collate, worker_init_fn=worker_init)


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader: DataLoader, device: torch.device, conf_thres: float = 0.001,
             iou_thres: float = 0.6, max_det: int = 300,
             on_image: Callable[[str, torch.Tensor], None] | None = None,
             plot_dir: Path | None = None) -> dict[str, Any]:
    """Box metrics of ``model`` on ``loader``; ``on_image(im_file, predictions in original pixels)`` if given;
    with ``plot_dir``, the first batch drawn with its labels and with the predictions."""
    model.eval()
    stats = DetectionStats(model.names)
    seen, times = 0, {"preprocess": 0.0, "inference": 0.0, "nms": 0.0}
    for batch in loader:
        t0 = time.perf_counter()
        images = batch["img"].to(device, non_blocking=True).float() / 255
        t1 = time.perf_counter()
        decoded = model(images)["det"][0]
        t2 = time.perf_counter()
        preds = non_max_suppression(decoded, conf_thres, iou_thres, nc=model.nc, multi_label=True, max_det=max_det)
        t3 = time.perf_counter()
        times["preprocess"] += t1 - t0
        times["inference"] += t2 - t1
        times["nms"] += t3 - t2
        if plot_dir is not None and seen == 0:
            draw_batch(batch, plot_dir / "val_batch0_labels.jpg", model.names)
            draw_batch(predictions_as_batch(batch, preds), plot_dir / "val_batch0_pred.jpg", model.names)
        h, w = images.shape[2:]
        scale = torch.tensor([w, h, w, h])
        for i, pred in enumerate(preds):
            keep = batch["batch_idx"] == i
            shape0, ratio_pad = batch["ori_shape"][i], batch["ratio_pad"][i]
            true_boxes = scale_boxes(xywh2xyxy(batch["bboxes"][keep] * scale), (h, w), shape0, ratio_pad)
            pred = pred.cpu()
            pred[:, :4] = scale_boxes(pred[:, :4], (h, w), shape0, ratio_pad)
            stats.add(pred, true_boxes, batch["cls"][keep])
            if on_image is not None:
                on_image(batch["im_file"][i], pred)
        seen += len(preds)
    results = stats.results()
    coco = stats.results(method="coco")
    results["coco_map50"], results["coco_map"] = coco["map50"], coco["map"]
    results["images"] = seen
    results["speed_ms"] = {k: v * 1000 / max(seen, 1) for k, v in times.items()}
    return results


def run_val(weights: str | Path, data: str | Path, imgsz: int = 640, batch_size: int = 32, conf_thres: float = 0.001,
            iou_thres: float = 0.6, max_det: int = 300, task: str = "val", device: str = "", workers: int = 8,
            save_json: bool = False, project: str | Path = "runs/val", name: str = "exp", exist_ok: bool = False,
            verbose: bool = True) -> dict[str, Any]:
    """val.py: validate weights on a data split, print the stock-style table, write ``<run>/metrics.json``."""
    dev = select_device(device)
    model = load_model(weights, device=dev)
    config = load_data_config(data)
    if task not in config.splits:
        raise ValueError(f"--task {task}: {config.source} has no '{task}' split (it has {sorted(config.splits)})")
    if model.nc != config.nc:
        raise ValueError(f"{weights} predicts {model.nc} classes but {config.source} has {config.nc}; "
                         "validate on the data the weights were trained for")
    scan = scan_split(config.splits[task], config.nc, config.kpt_shape)
    loader = val_loader(scan.labels, imgsz, batch_size, int(model.stride.max()), config.kpt_shape, workers)
    save_dir = increment_path(Path(project) / name, exist_ok)
    records: list[dict] = []
    on_image = (lambda f, p: records.extend(_coco_records(f, p))) if save_json else None
    results = evaluate(model, loader, dev, conf_thres, iou_thres, max_det, on_image, plot_dir=save_dir)
    metrics = {"box_precision": results["precision"], "box_recall": results["recall"],
               "box_map50": results["map50"], "box_map": results["map"],
               "box_map50_coco": results["coco_map50"], "box_map_coco": results["coco_map"], "images": results["images"],
               "instances": results["instances"], "speed_ms_per_image": results["speed_ms"],
               "per_class": results["per_class"], "skipped": [p.as_dict() for p in scan.problems]}
    (save_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    if save_json:
        (save_dir / "predictions.json").write_text(json.dumps(records))
    if verbose:
        print(format_table(results, model.names))
        s = results["speed_ms"]
        print(f"Speed: {s['preprocess']:.1f}ms pre-process, {s['inference']:.1f}ms inference, {s['nms']:.1f}ms NMS "
              f"per image at shape ({batch_size}, 3, {imgsz}, {imgsz})")
        print(f"Results saved to {save_dir}")
    return {**metrics, "save_dir": str(save_dir)}


def format_table(results: dict[str, Any], names: dict[int, str], per_class: bool = True) -> str:
    head = f"{'Class':>22}{'Images':>11}{'Instances':>11}{'P':>11}{'R':>11}{'mAP50':>11}{'mAP50-95':>11}"
    rows = [head, f"{'all':>22}{results['images']:>11}{results['instances']:>11}{results['precision']:>11.3g}"
                  f"{results['recall']:>11.3g}{results['map50']:>11.3g}{results['map']:>11.3g}"]
    if per_class:
        for name, r in results["per_class"].items():
            rows.append(f"{name:>22}{'':>11}{r['instances']:>11}{r['precision']:>11.3g}{r['recall']:>11.3g}"
                        f"{r['map50']:>11.3g}{r['map']:>11.3g}")
    return "\n".join(rows)


def _coco_records(im_file: str, pred: torch.Tensor) -> list[dict]:
    """COCO results format: xywh boxes (top-left corner) in original pixels; image_id from the file stem."""
    stem = Path(im_file).stem
    image_id = int(stem) if stem.isnumeric() else stem
    boxes = pred[:, :4].clone()
    boxes[:, 2:] -= boxes[:, :2]
    return [{"image_id": image_id, "category_id": int(c), "bbox": [round(float(v), 3) for v in b],
             "score": round(float(s), 5)} for b, s, c in zip(boxes, pred[:, 4], pred[:, 5])]
