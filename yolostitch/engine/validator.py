"""Validation of every task: letterboxed rect batches, one NMS, each task's metric, stock-style report."""

from __future__ import annotations

import json
from pathlib import Path
from functools import partial
from typing import Any, Callable, Sequence

import torch
from torch.utils.data import DataLoader

from ..data.config import load_data_config
from ..data.dataset import InstanceField, MultiTaskDataset, collate, loader_workers, worker_init
from ..data.feature_cache import FeatureCache, FeatureDataset
from ..data.scan import report_skipped, scan_data_split
from ..weights import load_model
from ..tasks import CLASS_FIELD, TASKS, ImageTruth, anchor_of, tasks_of
from ..tasks.registry import registered
from ..export.runtime import is_exported, load_exported
from ..export.sessions import refuse_dnn
from .features import Extractor, feature_source
from .inputs import input_size, model_input, stride_shape
from .label_files import label_lines
from .coco_records import image_id_of
from .plots import draw_batch, predictions_as_batch
from .precision import Precision, precision_for, to_float
from ..errors import FlagError
from .postprocess import xywh2xyxy
from .predict import postprocess
from .runs import increment_path, select_device, synced_clock
from .tta import augmented_forward, check_augment, refuse_feature_model


def val_loader(labels, imgsz: int, batch_size: int, stride: int, kpt_shape=None, workers: int = 8,
               use_masks: bool | None = None, instance_fields: Sequence[InstanceField] = (),
               rect: bool = True) -> DataLoader:
    """Letterboxed rectangular batches (square ``imgsz`` ones with ``rect=False``, for fixed-shape exported
    graphs); ``kpt_shape`` carries keypoints, ``use_masks`` rasterises masks (at the network input's full
    resolution, so mask IoU is measured as finely as COCO measures it), ``instance_fields`` are tasks' extra label
    columns."""
    dataset = MultiTaskDataset(labels, imgsz=imgsz, kpt_shape=kpt_shape, rect=rect, batch_size=batch_size,
                               stride=stride, pad=0.5, use_masks=use_masks, mask_ratio=1,
                               instance_fields=instance_fields)
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=loader_workers(workers, batch_size),
                      collate_fn=collate, worker_init_fn=worker_init)


def feature_val_loader(labels, cache: FeatureCache, batch_size: int, kpt_shape=None, workers: int = 8,
                       use_masks: bool | None = None, instance_fields: Sequence[InstanceField] = ()) -> DataLoader:
    """Validation from a feature cache: its square letterbox, labels as :func:`val_loader` gives them."""
    dataset = FeatureDataset(labels, cache, kpt_shape=kpt_shape, use_masks=use_masks, mask_ratio=1,
                             instance_fields=instance_fields)
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=loader_workers(workers, batch_size),
                      collate_fn=collate, worker_init_fn=worker_init)


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader: DataLoader, device: torch.device, conf_thres: float = 0.001,
             iou_thres: float = 0.6, max_det: int = 300,
             on_image: Callable[[str, dict[str, torch.Tensor]], None] | None = None,
             plot_dir: Path | None = None, data_options: dict[str, Any] | None = None,
             extractor: Extractor | None = None, precision: Precision | None = None,
             augment: bool = False) -> dict[str, Any]:
    """Metrics of every task of ``model`` on ``loader``: ``{"box": ..., "mask": ..., "pose": ...}`` and the
    image-class task's (each task's ``result_key``, for the tasks the model has), plus ``images`` and ``speed_ms``.

    Each task scores itself (:meth:`~yolostitch.tasks.Task.meter`): boxes are matched in original-image pixels;
    masks on the letterboxed network input (as stock YOLOv5-seg), labels without a polygon ignored; keypoints by
    OKS, labels without a labelled keypoint ignored; image-level classes by accuracy. ``on_image(im_file, kept)``
    gets each image's predictions in original-image pixels (``boxes``, ``conf``, ``cls``, and each task's fields:
    ``masks``, ``keypoints``...); with ``plot_dir``, the first batch is drawn with its labels and with the
    predictions. Batches from a feature cache feed the model their maps; ``extractor`` turns image batches into
    maps first. ``data_options``: the data file's mapping, where tasks find their options (``kpt_sigmas``).
    ``precision`` (:mod:`.precision`; default fp32) is the forward's autocast; outputs are cast to fp32 before
    NMS and metrics. ``augment``: test-time augmentation (:mod:`.tta`, stock's ``--augment``).
    """
    policy = precision or Precision()
    model.eval()
    tasks = tasks_of(model)
    for task in tasks:
        task.configure(data_options or {})
    meters = {task.key: task.meter(model.names) for task in tasks}
    meters = {key: m for key, m in meters.items() if m is not None}
    seen, times = 0, {"preprocess": 0.0, "inference": 0.0, "nms": 0.0}
    for batch in loader:
        t0 = synced_clock(device)
        x = model_input(batch, device, extractor)
        t1 = synced_clock(device)
        with policy.autocast():
            if augment:
                outputs = to_float(augmented_forward(model, policy.prepare(x), tasks, int(model.stride.max())))
            else:
                outputs = to_float(model(policy.prepare(x)))
        t2 = synced_clock(device)
        dets = postprocess(outputs, conf_thres, iou_thres, nc=model.nc, multi_label=True, max_det=max_det, tasks=tasks)
        t3 = synced_clock(device)
        times["preprocess"] += t1 - t0
        times["inference"] += t2 - t1
        times["nms"] += t3 - t2
        if plot_dir is not None and seen == 0 and "img" in batch:
            draw_batch(batch, plot_dir / "val_batch0_labels.jpg", model.names)
            draw_batch(predictions_as_batch(batch, dets, tasks), plot_dir / "val_batch0_pred.jpg", model.names)
        h, w = input_size(batch)
        scale = torch.tensor([w, h, w, h])
        for i, det in enumerate(dets):
            keep = batch["batch_idx"] == i
            truth = ImageTruth(batch, i, keep, (h, w), batch["ori_shape"][i], batch["ratio_pad"][i], batch[CLASS_FIELD][keep],
                               xywh2xyxy(batch["bboxes"][keep] * scale))
            for meter in meters.values():
                meter.add_image(det, truth)
            if on_image is not None:
                kept: dict[str, Any] = {"shape": tuple(int(v) for v in truth.shape0)}
                for task in tasks:
                    kept.update(task.original_fields(det, (h, w), truth.shape0, truth.ratio_pad))
                on_image(batch["im_file"][i], kept)
        for key, meter in meters.items():
            meter.add_batch(outputs[key], batch)
        seen += len(dets)
    results: dict[str, Any] = {"images": seen, "speed_ms": {k: v * 1000 / max(seen, 1) for k, v in times.items()}}
    for task in tasks:
        r = meters[task.key].results() if task.key in meters else None
        if r is not None:
            results[task.result_key] = r
    return results


def flat_metrics(results: dict[str, Any]) -> dict[str, float]:
    """``box_map50``, ``box_map``, ``mask_map50``, ..., ``cls_accuracy``: each task's figures (the keys of
    metrics.json and results.csv)."""
    return {k: v for part in registered("flat_metrics")(results) for k, v in part.items()}


def table_keys(results: dict[str, Any] | None = None) -> list[str]:
    """Result keys of the tasks with P, R, mAP50, mAP50-95 (``box``, ``mask``, ``pose``...), in task order;
    with ``results``, those present."""
    keys = [cls.result_key for cls in TASKS if cls.in_table]
    return [k for k in keys if results is None or k in results]


def fitness(metrics: dict[str, float]) -> float:
    """Stock's 0.1 mAP50 + 0.9 mAP50-95, averaged over the tasks evaluated."""
    scores = [0.1 * metrics[f"{p}_map50"] + 0.9 * metrics[f"{p}_map"] for p in table_keys() if f"{p}_map" in metrics]
    return sum(scores) / len(scores) if scores else 0.0


def summary_line(metrics: dict[str, float]) -> str:
    """``box mAP50 0.1750 mAP50-95 0.1027, mask mAP50 ...`` for the tasks in ``metrics``."""
    return ", ".join(f"{p} mAP50 {metrics[p + '_map50']:.4f} mAP50-95 {metrics[p + '_map']:.4f}"
                     for p in table_keys() if p + "_map" in metrics)


def run_val(weights: str | Path, data: str | Path, imgsz: int = 640, batch_size: int = 32, conf_thres: float = 0.001,
            iou_thres: float = 0.6, max_det: int = 300, task: str = "val", device: str = "", workers: int = 8,
            save_json: bool = False, project: str | Path = "runs/val", name: str = "exp", exist_ok: bool = False,
            verbose: bool = True, features: str | Path = "", extractor: str = "",
            extractor_weights: str = "", amp: str = "auto", single_cls: bool = False,
            augment: bool = False, save_txt: bool = False, save_conf: bool = False,
            per_class: bool | None = None, dnn: bool = False) -> dict[str, Any]:
    """val.py: validate weights on a data split, print the stock-style table, write ``<run>/metrics.json``.

    A feature-input model reads ``features`` (a cache directory), else runs ``extractor`` (any spec: the user's
    choice), else the extractor it was trained with if that is a built-in kind (see ``feature_source``).
    ``amp``: ``auto`` runs the forward in bf16 on CPUs with native bf16 (fp16 on CUDA), ``off`` in fp32
    (:mod:`.precision`). ``augment``: test-time augmentation (:mod:`.tta`). ``save_txt``: each image's
    predictions as label lines in ``<run>/labels`` (``detect.py --save-txt``'s form; ``save_conf`` appends the
    confidence). ``per_class``: print a row per class (``--verbose``); None: when there are fewer than 50
    classes, as stock. ``dnn``: an .onnx file runs in OpenCV DNN instead of onnxruntime (stock's ``--dnn``).
    """
    dev = select_device(device)
    precision = precision_for(amp, dev)  # a bad --amp fails before anything loads
    if augment:
        check_augment(weights)
    if is_exported(weights):  # .onnx / .torchscript from export.py: see yolostitch/export/runtime.py
        model, precision = load_exported(weights, dev, precision, dnn)
    else:
        refuse_dnn(weights, dnn)
        model = load_model(weights, device=dev)
    if not features:  # stock's check_img_size (a feature cache brings its own size)
        imgsz = stride_shape(imgsz, max(int(model.stride.max()), 32))[0]
    config = load_data_config(data)
    if single_cls:
        config = config.single_class()
    if task not in config.splits:
        raise FlagError(f"--task {task}: {config.source} has no '{task}' split (it has {sorted(config.splits)})")
    if model.nc != config.nc:
        hint = " (trained with --single-cls? pass it here too)" if model.nc == 1 else ""
        raise FlagError(f"{weights} predicts {model.nc} classes but {config.source} has {config.nc}; "
                        f"validate on the data the weights were trained for{hint}")
    tasks = tasks_of(model)
    for t in tasks:
        t.check_weights(config, str(weights))
    if augment:
        refuse_feature_model(model, weights)
    scan = scan_data_split(config, config.splits[task])
    report_skipped(scan.problems)
    options = dataset_options(tasks, config)
    cache, extractor = feature_source(model, features, imgsz, dev, extractor, extractor_weights)
    if cache is not None:
        imgsz = cache.imgsz
        loader = feature_val_loader(scan.labels, cache, batch_size, workers=workers, **options)
    else:
        loader = val_loader(scan.labels, imgsz, batch_size, int(model.stride.max()), workers=workers,
                            rect=not getattr(model, "fixed_shape", False), **options)
    save_dir = increment_path(Path(project) / name, exist_ok)
    records: list[dict] = []
    if save_txt:
        (save_dir / "labels").mkdir(exist_ok=True)

    def on_image(im_file: str, kept: dict[str, Any]) -> None:
        if save_json:
            records.extend(_coco_records(im_file, kept))
        if save_txt and len(kept[CLASS_FIELD]):
            lines = label_lines(kept, save_conf)
            (save_dir / "labels" / f"{Path(im_file).stem}.txt").write_text("\n".join(lines) + "\n")

    results = evaluate(model, loader, dev, conf_thres, iou_thres, max_det,
                       on_image if save_json or save_txt else None, plot_dir=save_dir,
                       data_options=config.raw, extractor=extractor, precision=precision, augment=augment)
    anchor = anchor_of(tasks, "val")
    box = results[anchor.result_key]
    coco = [type(t).coco_metrics(results) for t in tasks]
    metrics = {**flat_metrics(results), **coco[0], "images": results["images"], "instances": box["instances"],
               "speed_ms_per_image": results["speed_ms"],
               "per_class": {p: results[p]["per_class"] for p in table_keys(results)},
               "skipped": [p.as_dict() for p in scan.problems], "precision": precision.describe()}
    for part in coco[1:]:
        metrics.update(part)
    (save_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    if save_json:
        (save_dir / "predictions.json").write_text(json.dumps(records))
    if verbose:
        print(format_table(results, model.names, per_class=per_class if per_class is not None else model.nc < 50))
        for lines in registered("report_lines")(results):
            for line in lines:
                print(line)
        s = results["speed_ms"]
        print(f"Speed: {s['preprocess']:.1f}ms pre-process, {s['inference']:.1f}ms inference, {s['nms']:.1f}ms NMS "
              f"per image at shape ({batch_size}, 3, {imgsz}, {imgsz})")
        print(f"Precision: {precision.describe()}")
        print(f"Results saved to {save_dir}")
        if save_txt:
            n = len(list((save_dir / "labels").glob("*.txt")))
            print(f"{n} label{'s' * (n != 1)} saved to {save_dir / 'labels'}")
    return {**metrics, "save_dir": str(save_dir)}


def format_table(results: dict[str, Any], names: dict[int, str], per_class: bool = True) -> str:
    """Stock's table; with several tasks, one P R mAP50 mAP50-95 block per task (as stock YOLOv5-seg prints)."""
    prefixes = table_keys(results)
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
    """COCO results records of one image, made by the task of highest ``record_priority`` that has its fields
    (keypoints, else masks, else boxes), and annotated by the others (a mask's ``segmentation``)."""
    image_id = image_id_of(im_file)
    records, maker = [], None
    for cls in sorted(TASKS, key=lambda c: -c.record_priority):
        made = cls.coco_records(image_id, kept) if cls.record_priority >= 0 else None
        if made is not None:
            records, maker = made, cls
            break
    for cls in TASKS:
        cls.annotate_records(records, kept, maker)
    return records


def dataset_options(tasks: list, data: Any, train: bool = False) -> dict[str, Any]:
    """The datasets' keyword arguments for these tasks' label fields (tasks absent: their labels not prepared)."""
    options: dict[str, Any] = {"kpt_shape": None, "use_masks": False}
    for task in tasks:
        options.update(task.dataset_options(data, train))
    fields = [InstanceField(name, width, partial(type(t).instance_labels, name))
              for t in tasks for name, width in t.instance_fields.items()]
    if fields:
        options["instance_fields"] = fields
    return options
