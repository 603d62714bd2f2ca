"""Validation of every branch: letterboxed rect batches, one NMS, box/mask/keypoint mAP, stock-style report."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torchvision
from torch.utils.data import DataLoader

from ..data.config import load_data_config
from ..data.dataset import MultiTaskDataset, collate, loader_workers, worker_init
from ..data.feature_cache import FeatureCache, FeatureDataset
from ..data.scan import scan_split
from ..weights import load_model
from ..export.runtime import is_exported, load_exported
from ..losses import keypoint_sigmas
from ..losses.segment import resize_masks
from .features import Extractor, feature_source
from .inputs import input_size, model_input
from .coco_records import box_records, encode_masks, image_id_of, keypoint_records, mask_records
from .metrics import DetectionStats, keypoint_oks, mask_iou
from .plots import draw_batch, predictions_as_batch
from .precision import Precision, precision_for, to_float
from ..errors import FlagError
from .postprocess import scale_boxes, xywh2xyxy
from .predict import assemble_masks, image_region, postprocess, unletterbox_masks, unletterbox_points
from .runs import increment_path, select_device


def val_loader(labels, imgsz: int, batch_size: int, stride: int, kpt_shape=None, workers: int = 8,
               use_masks: bool | None = None, rect: bool = True) -> DataLoader:
    """Letterboxed rectangular batches (square ``imgsz`` ones with ``rect=False``); ``kpt_shape`` carries keypoints,
    ``use_masks`` rasterises masks (at the network input's full resolution, so mask IoU is measured as finely as
    COCO measures it)."""
    dataset = MultiTaskDataset(labels, imgsz=imgsz, kpt_shape=kpt_shape, rect=rect, batch_size=batch_size,
                               stride=stride, pad=0.5, use_masks=use_masks, mask_ratio=1)
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=loader_workers(workers, batch_size),
                      collate_fn=collate, worker_init_fn=worker_init)


def feature_val_loader(labels, cache: FeatureCache, batch_size: int, kpt_shape=None, workers: int = 8,
                       use_masks: bool | None = None) -> DataLoader:
    """Validation from a feature cache: its square letterbox, labels as :func:`val_loader` gives them."""
    dataset = FeatureDataset(labels, cache, kpt_shape=kpt_shape, use_masks=use_masks, mask_ratio=1)
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=loader_workers(workers, batch_size),
                      collate_fn=collate, worker_init_fn=worker_init)


TASK_PREFIX = {"det": "box", "seg": "mask", "kpt": "pose"}


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader: DataLoader, device: torch.device, conf_thres: float = 0.001,
             iou_thres: float = 0.6, max_det: int = 300,
             on_image: Callable[[str, dict[str, torch.Tensor]], None] | None = None,
             plot_dir: Path | None = None, kpt_sigmas=None, extractor: Extractor | None = None,
             precision: Precision | None = None) -> dict[str, Any]:
    """Metrics of every branch of ``model`` on ``loader``: ``{"box": ..., "mask": ..., "pose": ...}`` (tasks the
    model has), each with P, R, mAP50, mAP50-95 per class and overall, plus ``images`` and ``speed_ms``.

    Boxes are matched in original-image pixels; masks on the letterboxed network input (as stock YOLOv5-seg),
    labels without a polygon ignored; keypoints by OKS (box area x 0.53 as the scale, as ultralytics),
    labels without a labelled keypoint ignored; an image-level ``cls`` branch gets ``accuracy`` (per image and
    class, presence predicted at p > 0.5) and ``exact`` (images with every class right). ``on_image(im_file, kept)`` gets each image's predictions
    in original-image pixels (``boxes``, ``conf``, ``cls``, and ``masks``/``keypoints`` where present);
    with ``plot_dir``, the first batch is drawn with its labels and with the predictions. Batches from a
    feature cache feed the model their maps; ``extractor`` turns image batches into maps first. ``precision``
    (:mod:`.precision`; default fp32) is the forward's autocast; outputs are cast to fp32 before NMS and metrics.
    """
    policy = precision or Precision()
    model.eval()
    tasks = [t for t in TASK_PREFIX if t in model.heads]
    stats = {TASK_PREFIX[t]: DetectionStats(model.names, coco_max_det=20 if t == "kpt" else 100) for t in tasks}
    kpt_shape = model.model[model.heads["kpt"]].kpt_shape if "kpt" in tasks else None
    sigmas = keypoint_sigmas(kpt_shape[0], kpt_sigmas) if kpt_shape else None
    seen, times = 0, {"preprocess": 0.0, "inference": 0.0, "nms": 0.0}
    image_cls = {"right": 0, "all": 0, "exact": 0}
    for batch in loader:
        t0 = time.perf_counter()
        x = model_input(batch, device, extractor)
        t1 = time.perf_counter()
        with policy.autocast():
            outputs = to_float(model(policy.prepare(x)))
        t2 = time.perf_counter()
        dets = postprocess(outputs, conf_thres, iou_thres, nc=model.nc, multi_label=True, max_det=max_det,
                           kpt_shape=kpt_shape)
        t3 = time.perf_counter()
        times["preprocess"] += t1 - t0
        times["inference"] += t2 - t1
        times["nms"] += t3 - t2
        if plot_dir is not None and seen == 0 and "img" in batch:
            draw_batch(batch, plot_dir / "val_batch0_labels.jpg", model.names)
            draw_batch(predictions_as_batch(batch, dets), plot_dir / "val_batch0_pred.jpg", model.names)
        h, w = input_size(batch)
        scale = torch.tensor([w, h, w, h])
        for i, det in enumerate(dets):
            keep = batch["batch_idx"] == i
            shape0, ratio_pad = batch["ori_shape"][i], batch["ratio_pad"][i]
            true_cls = batch["cls"][keep]
            true_input = xywh2xyxy(batch["bboxes"][keep] * scale)  # network-input pixels
            rows = det.as_rows().cpu()
            rows[:, :4] = scale_boxes(rows[:, :4], (h, w), shape0, ratio_pad)
            stats["box"].add(rows, scale_boxes(true_input, (h, w), shape0, ratio_pad), true_cls)
            kept = {"boxes": rows[:, :4], "conf": rows[:, 4], "cls": rows[:, 5]}
            if "mask" in stats:
                iou, ignore = _mask_scores(det, batch, keep, true_input, (h, w), shape0, ratio_pad)
                stats["mask"].add_scores(iou, det.conf, det.cls, true_cls, ignore)
                if on_image is not None:
                    pred_masks = det.masks((h, w))
                    pred_masks[:, ~_image_area((h, w), shape0, ratio_pad).to(pred_masks.device)] = False
                    kept["masks"] = unletterbox_masks(pred_masks.cpu(), shape0, ratio_pad)
            if "pose" in stats:
                true_kpts = batch["keypoints"][keep].clone() if "keypoints" in batch else \
                    torch.zeros((len(true_cls), kpt_shape[0], 3))
                true_kpts[..., :2] *= torch.tensor([w, h])
                area = (true_input[:, 2] - true_input[:, 0]) * (true_input[:, 3] - true_input[:, 1]) * 0.53
                labelled = (true_kpts[..., 2] > 0).any(1) if true_kpts.shape[-1] > 2 else torch.ones(len(true_cls), dtype=torch.bool)
                oks = keypoint_oks(true_kpts, det.keypoints.cpu(), area, sigmas, true_boxes=true_input)
                stats["pose"].add_scores(oks, det.conf, det.cls, true_cls, ~labelled)
                if on_image is not None:
                    kept["keypoints"] = unletterbox_points(det.keypoints.cpu(), shape0, (h, w), ratio_pad)
            if on_image is not None:
                on_image(batch["im_file"][i], kept)
        if "cls" in outputs:  # image-level classes present: right or wrong per (image, class) at p = 0.5
            present = torch.zeros_like(outputs["cls"], dtype=torch.bool).cpu()
            present[batch["batch_idx"], batch["cls"].long()] = True
            right = (outputs["cls"].cpu() > 0.5) == present
            image_cls["right"] += int(right.sum())
            image_cls["all"] += right.numel()
            image_cls["exact"] += int(right.all(1).sum())
        seen += len(dets)
    results: dict[str, Any] = {"images": seen, "speed_ms": {k: v * 1000 / max(seen, 1) for k, v in times.items()}}
    if image_cls["all"]:
        results["cls"] = {"accuracy": image_cls["right"] / image_cls["all"], "exact": image_cls["exact"] / max(seen, 1)}
    for prefix, task_stats in stats.items():
        r = task_stats.results()
        coco = task_stats.results(method="coco")
        r["coco_map50"], r["coco_map"] = coco["map50"], coco["map"]
        results[prefix] = r
    return results


def flat_metrics(results: dict[str, Any]) -> dict[str, float]:
    """``box_map50``, ``box_map``, ``mask_map50``, ... for the tasks evaluated (the keys of metrics.json)."""
    out = {}
    for prefix in TASK_PREFIX.values():
        if prefix in results:
            r = results[prefix]
            out.update({f"{prefix}_precision": r["precision"], f"{prefix}_recall": r["recall"],
                        f"{prefix}_map50": r["map50"], f"{prefix}_map": r["map"]})
    if "cls" in results:  # image-level classification: per (image, class) accuracy, and images all right
        out.update({"cls_accuracy": results["cls"]["accuracy"], "cls_exact": results["cls"]["exact"]})
    return out


def fitness(metrics: dict[str, float]) -> float:
    """Stock's 0.1 mAP50 + 0.9 mAP50-95, averaged over the tasks evaluated."""
    scores = [0.1 * metrics[f"{p}_map50"] + 0.9 * metrics[f"{p}_map"] for p in TASK_PREFIX.values()
              if f"{p}_map" in metrics]
    return sum(scores) / len(scores) if scores else 0.0


def _image_area(size: tuple[int, int], shape0, ratio_pad) -> torch.Tensor:
    inside = torch.zeros(size, dtype=torch.bool)
    inside[image_region(size, shape0, ratio_pad)] = True
    return inside


def _mask_scores(det, batch: dict[str, Any], keep: torch.Tensor, true_boxes: torch.Tensor, size: tuple[int, int],
                 shape0, ratio_pad) -> tuple[torch.Tensor, torch.Tensor]:
    """(mask IoU (labels, predictions), labels to ignore) for one image, on the network input.

    Masks are cropped to their boxes, so a prediction whose box misses every same-class label box has IoU 0 with
    all of them: only the others are assembled (an untrained model's 300 low-confidence boxes mostly miss).
    Pixels on the letterbox padding belong to no object. Labels without a polygon are ignored.
    """
    n_true, boxes, cls = len(true_boxes), det.boxes.cpu(), det.cls.cpu()
    iou = torch.zeros((n_true, len(boxes)))
    has_mask = batch["has_mask"][keep] if "has_mask" in batch else torch.zeros(n_true, dtype=torch.bool)
    if n_true and len(boxes) and "masks" in batch:
        near = (torchvision.ops.box_iou(true_boxes, boxes) > 0) & (batch["cls"][keep][:, None] == cls[None])
        candidates = near.any(0).nonzero().view(-1)
        if len(candidates):
            pred = assemble_masks(det.protos, det.coefficients[candidates], det.boxes[candidates], size).cpu()
            pred &= _image_area(size, shape0, ratio_pad)
            iou[:, candidates] = mask_iou(resize_masks(batch["masks"][keep], size), pred)
    return iou, ~has_mask


def run_val(weights: str | Path, data: str | Path, imgsz: int = 640, batch_size: int = 32, conf_thres: float = 0.001,
            iou_thres: float = 0.6, max_det: int = 300, task: str = "val", device: str = "", workers: int = 8,
            save_json: bool = False, project: str | Path = "runs/val", name: str = "exp", exist_ok: bool = False,
            verbose: bool = True, features: str | Path = "", extractor: str = "",
            extractor_weights: str = "", amp: str = "auto") -> dict[str, Any]:
    """val.py: validate weights on a data split, print the stock-style table, write ``<run>/metrics.json``.

    A feature-input model reads ``features`` (a cache directory), else runs ``extractor`` (any spec: the user's
    choice), else the extractor it was trained with if that is a built-in kind (see ``feature_source``).
    ``amp``: ``auto`` runs the forward in bf16 on CPUs with native bf16 (fp16 on CUDA), ``off`` in fp32
    (:mod:`.precision`).
    """
    dev = select_device(device)
    precision = precision_for(amp, dev)  # a bad --amp fails before anything loads
    if is_exported(weights):  # .onnx / .torchscript from export.py: see yolostitch/export/runtime.py
        model, precision = load_exported(weights, dev, precision)
    else:
        model = load_model(weights, device=dev)
    config = load_data_config(data)
    if task not in config.splits:
        raise FlagError(f"--task {task}: {config.source} has no '{task}' split (it has {sorted(config.splits)})")
    if model.nc != config.nc:
        raise FlagError(f"{weights} predicts {model.nc} classes but {config.source} has {config.nc}; "
                        "validate on the data the weights were trained for")
    if "kpt" in model.heads and list(model.kpt_shape or []) != list(config.kpt_shape or []):
        raise FlagError(f"{weights} predicts keypoints of shape {model.kpt_shape} but {config.source} has "
                        f"kpt_shape {config.kpt_shape}")
    scan = scan_split(config.splits[task], config.nc, config.kpt_shape)
    kpt_shape = config.kpt_shape if "kpt" in model.heads else None
    cache, extractor = feature_source(model, features, imgsz, dev, extractor, extractor_weights)
    if cache is not None:
        imgsz = cache.imgsz
        loader = feature_val_loader(scan.labels, cache, batch_size, kpt_shape, workers, use_masks="seg" in model.heads)
    else:
        loader = val_loader(scan.labels, imgsz, batch_size, int(model.stride.max()), kpt_shape, workers,
                            use_masks="seg" in model.heads, rect=not getattr(model, "fixed_shape", False))
    save_dir = increment_path(Path(project) / name, exist_ok)
    records: list[dict] = []
    on_image = (lambda f, kept: records.extend(_coco_records(f, kept))) if save_json else None
    results = evaluate(model, loader, dev, conf_thres, iou_thres, max_det, on_image, plot_dir=save_dir,
                       kpt_sigmas=config.raw.get("kpt_sigmas"), extractor=extractor, precision=precision)
    box = results["box"]
    metrics = {**flat_metrics(results), "box_map50_coco": box["coco_map50"], "box_map_coco": box["coco_map"],
               "images": results["images"], "instances": box["instances"], "speed_ms_per_image": results["speed_ms"],
               "per_class": {p: results[p]["per_class"] for p in TASK_PREFIX.values() if p in results},
               "skipped": [p.as_dict() for p in scan.problems], "precision": precision.describe()}
    for prefix in ("mask", "pose"):
        if prefix in results:
            metrics[f"{prefix}_map50_coco"], metrics[f"{prefix}_map_coco"] = (results[prefix]["coco_map50"],
                                                                              results[prefix]["coco_map"])
    (save_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    if save_json:
        (save_dir / "predictions.json").write_text(json.dumps(records))
    if verbose:
        print(format_table(results, model.names))
        if "cls" in results:
            print(f"image classes: {results['cls']['accuracy']:.3f} right per image and class, "
                  f"{results['cls']['exact']:.3f} of images entirely right")
        s = results["speed_ms"]
        print(f"Speed: {s['preprocess']:.1f}ms pre-process, {s['inference']:.1f}ms inference, {s['nms']:.1f}ms NMS "
              f"per image at shape ({batch_size}, 3, {imgsz}, {imgsz})")
        print(f"Precision: {precision.describe()}")
        print(f"Results saved to {save_dir}")
    return {**metrics, "save_dir": str(save_dir)}


def format_table(results: dict[str, Any], names: dict[int, str], per_class: bool = True) -> str:
    """Stock's table; with several tasks, one P R mAP50 mAP50-95 block per task (as stock YOLOv5-seg prints)."""
    prefixes = [p for p in TASK_PREFIX.values() if p in results]
    single = prefixes == ["box"]
    head = f"{'Class':>22}{'Images':>11}{'Instances':>11}"
    for p in prefixes:
        labels = ("P", "R", "mAP50", "mAP50-95") if single else (f"{p.capitalize()}(P", "R", "mAP50", "mAP50-95)")
        head += "".join(f"{label:>11}" for label in labels)
    box = results["box"]

    def cells(r: dict[str, Any]) -> str:
        return f"{r['precision']:>11.3g}{r['recall']:>11.3g}{r['map50']:>11.3g}{r['map']:>11.3g}"

    rows = [head, f"{'all':>22}{results['images']:>11}{box['instances']:>11}"
                  + "".join(cells(results[p]) for p in prefixes)]
    if per_class:
        for name, r in box["per_class"].items():
            rows.append(f"{name:>22}{'':>11}{r['instances']:>11}" + "".join(
                cells(results[p]["per_class"].get(name, {"precision": 0.0, "recall": 0.0, "map50": 0.0, "map": 0.0}))
                for p in prefixes))
    return "\n".join(rows)


def _coco_records(im_file: str, kept: dict[str, torch.Tensor]) -> list[dict]:
    """COCO results records of one image: boxes, plus ``segmentation`` (RLE) and ``keypoints`` where predicted."""
    image_id = image_id_of(im_file)
    if "keypoints" in kept:
        records = keypoint_records(image_id, kept["keypoints"], kept["conf"], kept["cls"], kept["boxes"])
    elif "masks" in kept:
        records = mask_records(image_id, kept["masks"], kept["conf"], kept["cls"], kept["boxes"])
    else:
        return box_records(image_id, kept["boxes"], kept["conf"], kept["cls"])
    if "masks" in kept and "keypoints" in kept:
        for r, rle in zip(records, encode_masks(kept["masks"])):
            r["segmentation"] = rle
    return records
