"""``compare.py``: several models on one dataset, one recipe, one table.

Each ``--cfg`` is trained with the same hyperparameter file, epochs, image size, batch size, workers and seed,
from scratch or, with ``--init W.pt``, from that checkpoint (ours through train.py's ``--weights`` transfer,
class rows matched by name included; stock through stock's own ``--weights`` code, see
:mod:`..run_stock.init_weights`); each ``--weights`` is only validated. ``--stock`` adds, for every stock
architecture among the configs, the real stock YOLOv5 trained in a child process on the same images and boxes
with the same recipe; a config with a Segment branch (``yolov5{n,s}-seg``, ``-multitask``) also gets stock
YOLOv5-seg of its size (its segment/train.py on the same images and polygons, box and mask mAP from its
segment/val.py), and a multi-task config gets both stock rows (``STOCK_COUNTERPARTS``; each stock model once).
Every row is then measured the same way: accuracy from its own validator on the val split (final-epoch EMA
weights), parameters and GFLOPs (thop), CPU latency per image of detect.py-style inference on val images.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from ..data.config import load_data_config
from ..data.scan import scan_split
from ..engine.runs import increment_path
from ..models.config import load_model_config
from ..models.feature_input import feature_rows
from ..errors import DataError, FlagError, SetupError
from ..latency import latency_ms, read_images
from .measure import our_detector
from .report import write_report

logger = logging.getLogger(__name__)

STOCK_ARCHITECTURES = ("yolov5n.yaml", "yolov5s.yaml", "yolov5m.yaml", "yolov5l.yaml", "yolov5x.yaml")
# our built-in configs with a Segment branch -> the stock rows they are read against: stock YOLOv5-seg of the same
# size (stock's models/segment/*.yaml, trained by its segment/train.py) and, for multi-task, stock detection too
STOCK_COUNTERPARTS = {"yolov5n-seg.yaml": ("yolov5n-seg.yaml",), "yolov5s-seg.yaml": ("yolov5s-seg.yaml",),
                      "yolov5n-multitask.yaml": ("yolov5n.yaml", "yolov5n-seg.yaml"),
                      "yolov5s-multitask.yaml": ("yolov5s.yaml", "yolov5s-seg.yaml"),
                      **{name: (name,) for name in STOCK_ARCHITECTURES}}


@dataclass
class CompareOptions:
    data: str = "shapes.yaml"
    cfg: list[str] = field(default_factory=list)  # model YAMLs trained with the shared recipe
    weights: list[str] = field(default_factory=list)  # checkpoints only validated
    init: str = ""  # checkpoint every trained row starts from (ours: train.py --weights; stock: its --weights)
    class_transfer: bool = True  # --init: also Detect's class rows of the data's classes the checkpoint names
    features: str = ""  # feature cache for the FeatureInput models among them
    stitch_init: int = 0  # FeatureInput rows: fit their adapters on this many images to --init's backbone
    stock: bool = False  # add stock YOLOv5's own run for each stock architecture in cfg
    hyp: str = "hyp.scratch-low.yaml"
    epochs: int = 100
    batch_size: int = 16
    imgsz: int = 640
    device: str = ""
    workers: int = 8
    seed: int = 0
    latency_images: int = 20
    threads: int = 0  # torch threads for the latency figures (0: torch's default here)
    project: str = "runs/compare"
    name: str = "exp"
    exist_ok: bool = False
    amp: str = "auto"  # our rows' training, validation and latency precision (engine.precision); stock: its own


def compare(opt: CompareOptions) -> list[dict[str, Any]]:
    """Train/validate and measure every model; write compare.md, compare.csv, compare.png; return the rows."""
    opt.threads = opt.threads or torch.get_num_threads()  # before anything runs that could change it
    if not opt.cfg and not opt.weights:
        raise FlagError("nothing to compare: give --cfg (models to train) and/or --weights (models to validate)")
    stock_cfgs = _stock_configs(opt.cfg) if opt.stock else []
    if opt.stock:
        if not stock_cfgs:
            raise FlagError(f"--stock: none of --cfg {opt.cfg} has a stock YOLOv5 counterpart "
                            f"({', '.join(STOCK_COUNTERPARTS)}); stock YOLOv5 can only train its own models")
        check_stock_available(segment=any(_is_stock_segment(c) for c in stock_cfgs))
    feature_models = [c for c in opt.cfg if _is_feature_model(c)]
    if feature_models and not opt.features:
        raise FlagError(f"--cfg {feature_models[0]} reads feature maps: pass --features DIR, a cache made by "
                        "extract.py")
    init_classes = _check_init(opt, bool(stock_cfgs)) if opt.init else None
    if opt.stitch_init and not (opt.init and feature_models):
        raise FlagError("--stitch-init fits the adapters of the FeatureInput rows to the backbone of --init: give "
                        f"--init WEIGHTS and a FeatureInput model among --cfg (got --init {opt.init or 'none'}, "
                        f"--cfg {opt.cfg})")

    from ..engine.trainer import load_hyp

    data = load_data_config(opt.data)  # before the run folder: a bad data YAML leaves none behind
    posed = [c for c in opt.cfg if _has_keypoints(c)]
    if posed and not data.kpt_shape:  # else that row would fail after the rows before it had trained
        raise FlagError(f"--cfg {posed[0]} has a keypoint branch but {data.source} declares no kpt_shape")
    if feature_models:  # a stale or foreign cache fails now, not after the rows before it have trained
        _check_feature_cache(opt.features, data)
    save_dir = increment_path(Path(opt.project) / opt.name, opt.exist_ok)
    hyp_path = save_dir / "hyp.yaml"  # the one recipe every row trains with, stock included
    hyp_path.write_text(yaml.safe_dump(load_hyp(opt.hyp), sort_keys=False))
    (save_dir / "opt.yaml").write_text(yaml.safe_dump(asdict(opt), sort_keys=False))
    latency_files = _latency_files(data, opt.latency_images)

    rows = []
    for cfg in opt.cfg:
        rows.append(train_row(cfg, opt, str(hyp_path), save_dir, latency_files))
        for stock_cfg in _stock_configs([cfg]) if opt.stock else []:  # each stock model once, after its first user
            if stock_cfg in stock_cfgs:
                stock_cfgs.remove(stock_cfg)
                rows.append(stock_row(stock_cfg, opt, hyp_path, save_dir, data.nc, latency_files))
                if opt.init and init_classes != data.nc:  # stock's --weights then skips Detect's convs
                    rows[-1]["detect_fresh"] = True
    for weights in opt.weights:
        rows.append(val_row(weights, opt, save_dir, latency_files))
    start = f", every trained row from {Path(opt.init).name}" if opt.init else ""
    recipe = (f"{data.source}, {opt.epochs} epochs, imgsz {opt.imgsz}, batch {opt.batch_size}, seed {opt.seed}, "
              f"hyp {opt.hyp}{start}; latency: median over {len(latency_files)} val images, batch 1, CPU, "
              f"{opt.threads} torch threads")
    table = write_report(rows, save_dir, recipe)
    logger.info(table)
    logger.info(f"results saved to {save_dir} (compare.md, compare.csv, compare.png, one run directory per row)")
    return rows


def train_row(cfg: str, opt: CompareOptions, hyp: str, save_dir: Path, latency_files: list[str]) -> dict[str, Any]:
    """Train ``cfg`` with the shared recipe; measure its final (EMA) weights."""
    from ..engine.trainer import TrainOptions, train

    name = Path(cfg).stem
    features = opt.features if _is_feature_model(cfg) else ""
    options = TrainOptions(cfg=cfg, data=opt.data, hyp=hyp, epochs=opt.epochs, batch_size=opt.batch_size,
                           imgsz=opt.imgsz, device=opt.device, workers=opt.workers, seed=opt.seed,
                           project=str(save_dir / "runs"), name=name, exist_ok=True, features=features,
                           weights=opt.init, class_transfer=opt.class_transfer, amp=opt.amp,
                           stitch_init=opt.stitch_init if features else 0)
    start = time.perf_counter()
    summary = train(options)
    train_s = time.perf_counter() - start
    weights = Path(summary["save_dir"]) / "weights" / "last.pt"
    init = {"init": summary.get("init") or f"from {Path(opt.init).name}"} if opt.init else {}
    if opt.init and features and opt.stitch_init:
        init["init"] += f"; adapters stitched to its backbone on {opt.stitch_init} images"
    return {"model": name, "source": "yolostitch, trained", **_accuracy(summary),
            **_measure(weights, opt.imgsz, features, latency_files, opt.threads, opt.amp), "train_s": train_s,
            "weights": str(weights), **init}


def val_row(weights: str, opt: CompareOptions, save_dir: Path, latency_files: list[str]) -> dict[str, Any]:
    """Validate given weights on the data's val split; measure them."""
    from ..engine.validator import run_val

    name = f"{Path(weights).parent.parent.name}/{Path(weights).stem}" if Path(weights).parent.name == "weights" \
        else Path(weights).stem
    metrics = run_val(weights, opt.data, opt.imgsz, opt.batch_size * 2, device=opt.device, workers=opt.workers,
                      project=str(save_dir / "val"), name=name.replace("/", "-"), exist_ok=True, verbose=False,
                      features=opt.features, amp=opt.amp)
    return {"model": name, "source": "yolostitch, validated", **_accuracy(metrics),
            **_measure(weights, opt.imgsz, opt.features, latency_files, opt.threads, opt.amp), "train_s": None,
            "weights": str(weights)}


def stock_row(cfg: str, opt: CompareOptions, hyp: Path, save_dir: Path, nc: int,
              latency_files: list[str]) -> dict[str, Any]:
    """Stock YOLOv5 trains ``cfg`` (its own YAML) on a box-only export of the same data, in a child process;
    a ``-seg`` model is stock YOLOv5-seg's (segment/train.py and segment/val.py) on a polygon export."""
    from ..run_stock.data import export_detection, export_segmentation
    from ..run_stock.importer import STOCK_VERSION
    from ..run_stock.runner import run_child

    segment = _is_stock_segment(cfg)
    export = export_segmentation if segment else export_detection
    data_yaml, counts = export(opt.data, save_dir / ("stock-seg-data" if segment else "stock-data"))
    spec = {"cfg": f"{Path(cfg).stem}.yaml", "data": str(data_yaml), "hyp": str(hyp.resolve()), "epochs": opt.epochs,
            "batch_size": opt.batch_size, "imgsz": opt.imgsz, "device": opt.device, "workers": opt.workers,
            "seed": opt.seed, "project": str((save_dir / "runs").resolve()), "name": f"{Path(cfg).stem}-stock",
            "nc": nc, "measure": latency_files, "threads": opt.threads, "init": _local_init(opt)}
    log = save_dir / f"{Path(cfg).stem}-stock.log"
    logger.info(f"training {Path(cfg).name} with stock YOLOv5 {STOCK_VERSION}{' segment/train.py' if segment else ''} "
                f"(log: {log}) ...")
    result = run_child(spec, log, "yolostitch.run_stock.segment" if segment else "yolostitch.run_stock.runner")
    masks = {k: result[k] for k in ("mask_map50", "mask_map")} if segment else {}
    left_out = sum(c.get("without_polygon", 0) for c in counts.values())
    note = {"data_note": f"{left_out} instances without a polygon left out (stock-seg needs one per instance)"} \
        if left_out else {}
    return {"model": Path(cfg).stem, "source": f"stock YOLOv5 {STOCK_VERSION}", "box_map50": result["box_map50"],
            "box_map": result["box_map"], **masks, "parameters": result["parameters"], "gflops": result["gflops"],
            "latency_ms": result["latency_ms"], "train_s": result["wall_s"], "weights": result["last"],
            **stock_init_note(result, opt.init), **note}


def stock_init_note(result: dict[str, Any], init: str) -> dict[str, str]:
    """The ``init`` cell of a stock row: what stock's own ``--weights`` code transferred (``{}`` from scratch)."""
    if not init:
        return {}
    n = result.get("transferred") or {}
    count = f"{n['transferred']}/{n['total']} tensors" if n else "?"
    return {"init": f"{count} from {Path(init).name} (stock's --weights: same name and shape only)"}


def check_stock_available(segment: bool = False) -> None:
    """Import stock YOLOv5 (offline, shimmed) in a child process, as the run will; a clear error if it can't.
    ``segment``: its segment/train.py too."""
    from ..run_stock.runner import child_env

    probe = subprocess.run([sys.executable, "-c", "from yolostitch.run_stock.importer import import_stock_yolo; "
                            "import_stock_yolo(); import yolostitch.run_stock.runner as r; r._stand_ins(); "
                            "import yolov5.train" + ("; import yolov5.segment.train" if segment else "")],
                           capture_output=True, text=True, env=child_env())
    if probe.returncode:
        lines = [line for line in probe.stderr.strip().splitlines() if line.strip()]
        raise SetupError(f"--stock needs the stock YOLOv5 package, which does not import here: "
                         f"{lines[-1] if lines else 'exit ' + str(probe.returncode)}")


def _check_feature_cache(features: str, data) -> None:
    """Refuse a cache that has current maps for none of the training images (training the row would)."""
    from ..data.feature_cache import FeatureCache, FeatureCacheError

    cache = FeatureCache(features)
    labels = scan_split(data.split("train", "to train on"), data.nc, data.kpt_shape).labels
    kept, _, skipped = cache.select(labels)
    if not kept:
        raise FeatureCacheError(f"{cache.root}: none of the {len(labels)} training images of {data.source} has "
                                f"current cached features (e.g. {skipped[0]}); run extract.py on this dataset")


def _local_init(opt: CompareOptions) -> str:
    return str(Path(opt.init).resolve()) if opt.init else ""


def _check_init(opt: CompareOptions, stock: bool) -> int | None:
    """--init: a readable local checkpoint, before anything trains (nothing is ever downloaded); its class count
    (None if it names no classes)."""
    from ..weights import read_weights

    if not opt.cfg:
        raise FlagError(f"--init {opt.init}: no --cfg to train from it (--weights are validated as they are)")
    if not Path(opt.init).is_file():
        raise FlagError(f"--init {opt.init}: no such file; give a local .pt (yolostitch or stock YOLOv5; "
                        "nothing is downloaded)")
    if stock and Path(opt.init).suffix != ".pt":
        raise FlagError(f"--init {opt.init}: stock YOLOv5's --weights takes a .pt file (it would silently train "
                        f"from scratch from a {Path(opt.init).suffix or 'suffix-less'} file)")
    names = read_weights(opt.init).names  # a clear error now for a file that is no checkpoint, not after a row trained
    return len(names) or None


def _accuracy(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: metrics.get(k) for k in ("box_map50", "box_map", "mask_map50", "mask_map", "pose_map50", "pose_map")
            if metrics.get(k) is not None}


def _measure(weights: str | Path, imgsz: int, features: str, latency_files: list[str], threads: int,
             amp: str = "auto") -> dict[str, Any]:
    from ..models.summary import model_summary
    from ..weights import load_model

    summary = model_summary(load_model(weights), imgsz, verbose=False)  # unfused, as stock's summary counts
    costs = {"parameters": summary["parameters"], "gflops": summary["gflops"]}
    detect = our_detector(weights, imgsz, features, amp)
    return {**costs, "latency_ms": latency_ms(detect, read_images(latency_files), threads),
            "latency_note": "excl. the feature extractor (maps read from the cache)" if features else ""}


def _stock_configs(cfgs: list[str]) -> list[str]:
    """The stock YOLOv5 models the configs are read against (``STOCK_COUNTERPARTS``), each once, in order. Only
    built-in configs named as such count (a path is someone's own file)."""
    found = [s for c in cfgs for s in STOCK_COUNTERPARTS.get(c if c.endswith(".yaml") else f"{c}.yaml", ())]
    return list(dict.fromkeys(found))


def _is_stock_segment(stock_cfg: str) -> bool:
    return Path(stock_cfg).stem.endswith("-seg")


def _is_feature_model(cfg: str) -> bool:
    return bool(feature_rows(load_model_config(cfg)[0]))


def _has_keypoints(cfg: str) -> bool:
    config = load_model_config(cfg)[0]
    return any(len(row) > 2 and row[2] == "Keypoints" for row in config.get("head") or [])


def _latency_files(data, n: int) -> list[str]:
    split = data.val_sources()
    labels = sorted(scan_split(split, data.nc, data.kpt_shape).labels, key=lambda lab: lab.im_file)
    if not labels:
        raise DataError(f"{data.source}: no usable images in the val split to time inference on")
    return [lab.im_file for lab in labels[:max(n, 1)]]

