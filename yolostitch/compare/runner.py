"""``compare.py``: several models on one dataset, one recipe, one table.

Each ``--cfg`` is trained from scratch with the same hyperparameter file, epochs, image size, batch size,
workers and seed; each ``--weights`` is only validated. ``--stock`` adds, for every stock architecture among the
configs, the real stock YOLOv5 trained in a child process on the same images and boxes with the same recipe.
Every row is then measured the same way: accuracy from its own validator on the val split (final-epoch EMA
weights), parameters and GFLOPs (thop), CPU latency per image of detect.py-style inference on val images.
"""

from __future__ import annotations

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
from .measure import latency_ms, our_detector, read_images
from .report import write_report

STOCK_ARCHITECTURES = ("yolov5n.yaml", "yolov5s.yaml", "yolov5m.yaml", "yolov5l.yaml", "yolov5x.yaml")


@dataclass
class CompareOptions:
    data: str = "shapes.yaml"
    cfg: list[str] = field(default_factory=list)  # model YAMLs trained with the shared recipe
    weights: list[str] = field(default_factory=list)  # checkpoints only validated
    features: str = ""  # feature cache for the FeatureInput models among them
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


def compare(opt: CompareOptions) -> list[dict[str, Any]]:
    """Train/validate and measure every model; write compare.md, compare.csv, compare.png; return the rows."""
    opt.threads = opt.threads or torch.get_num_threads()  # before anything runs that could change it
    if not opt.cfg and not opt.weights:
        raise ValueError("nothing to compare: give --cfg (models to train) and/or --weights (models to validate)")
    stock_cfgs = _stock_configs(opt.cfg) if opt.stock else []
    if opt.stock:
        if not stock_cfgs:
            raise ValueError(f"--stock: none of --cfg {opt.cfg} is a stock architecture "
                             f"({', '.join(STOCK_ARCHITECTURES)}); stock YOLOv5 can only train its own models")
        check_stock_available()
    feature_models = [c for c in opt.cfg if _is_feature_model(c)]
    if feature_models and not opt.features:
        raise ValueError(f"--cfg {feature_models[0]} reads feature maps: pass --features DIR, a cache made by "
                         "extract.py")

    from ..engine.trainer import load_hyp

    save_dir = increment_path(Path(opt.project) / opt.name, opt.exist_ok)
    hyp_path = save_dir / "hyp.yaml"  # the one recipe every row trains with, stock included
    hyp_path.write_text(yaml.safe_dump(load_hyp(opt.hyp), sort_keys=False))
    (save_dir / "opt.yaml").write_text(yaml.safe_dump(asdict(opt), sort_keys=False))
    data = load_data_config(opt.data)
    latency_files = _latency_files(data, opt.latency_images)

    rows = []
    for cfg in opt.cfg:
        rows.append(train_row(cfg, opt, str(hyp_path), save_dir, latency_files))
        if cfg in stock_cfgs:
            rows.append(stock_row(cfg, opt, hyp_path, save_dir, data.nc, latency_files))
    for weights in opt.weights:
        rows.append(val_row(weights, opt, save_dir, latency_files))
    recipe = (f"{data.source}, {opt.epochs} epochs, imgsz {opt.imgsz}, batch {opt.batch_size}, seed {opt.seed}, "
              f"hyp {opt.hyp}; latency: median over {len(latency_files)} val images, batch 1, CPU, "
              f"{opt.threads} torch threads")
    table = write_report(rows, save_dir, recipe)
    print(table)
    print(f"results saved to {save_dir} (compare.md, compare.csv, compare.png, one run directory per row)")
    return rows


def train_row(cfg: str, opt: CompareOptions, hyp: str, save_dir: Path, latency_files: list[str]) -> dict[str, Any]:
    """Train ``cfg`` with the shared recipe; measure its final (EMA) weights."""
    from ..engine.trainer import TrainOptions, train

    name = Path(cfg).stem
    features = opt.features if _is_feature_model(cfg) else ""
    options = TrainOptions(cfg=cfg, data=opt.data, hyp=hyp, epochs=opt.epochs, batch_size=opt.batch_size,
                           imgsz=opt.imgsz, device=opt.device, workers=opt.workers, seed=opt.seed,
                           project=str(save_dir / "runs"), name=name, exist_ok=True, features=features)
    start = time.perf_counter()
    summary = train(options)
    train_s = time.perf_counter() - start
    weights = Path(summary["save_dir"]) / "weights" / "last.pt"
    return {"model": name, "source": "yolostitch, trained", **_accuracy(summary),
            **_measure(weights, opt.imgsz, features, latency_files, opt.threads), "train_s": train_s,
            "weights": str(weights)}


def val_row(weights: str, opt: CompareOptions, save_dir: Path, latency_files: list[str]) -> dict[str, Any]:
    """Validate given weights on the data's val split; measure them."""
    from ..engine.validator import run_val

    name = f"{Path(weights).parent.parent.name}/{Path(weights).stem}" if Path(weights).parent.name == "weights" \
        else Path(weights).stem
    metrics = run_val(weights, opt.data, opt.imgsz, opt.batch_size * 2, device=opt.device, workers=opt.workers,
                      project=str(save_dir / "val"), name=name.replace("/", "-"), exist_ok=True, verbose=False,
                      features=opt.features)
    return {"model": name, "source": "yolostitch, validated", **_accuracy(metrics),
            **_measure(weights, opt.imgsz, opt.features, latency_files, opt.threads), "train_s": None,
            "weights": str(weights)}


def stock_row(cfg: str, opt: CompareOptions, hyp: Path, save_dir: Path, nc: int,
              latency_files: list[str]) -> dict[str, Any]:
    """Stock YOLOv5 trains ``cfg`` (its own YAML) on a box-only export of the same data, in a child process."""
    from ..stock.data import export_detection
    from ..stock.importer import STOCK_VERSION
    from ..stock.runner import run_child

    data_yaml, _ = export_detection(opt.data, save_dir / "stock-data")
    spec = {"cfg": f"{Path(cfg).stem}.yaml", "data": str(data_yaml), "hyp": str(hyp.resolve()), "epochs": opt.epochs,
            "batch_size": opt.batch_size, "imgsz": opt.imgsz, "device": opt.device, "workers": opt.workers,
            "seed": opt.seed, "project": str((save_dir / "runs").resolve()), "name": f"{Path(cfg).stem}-stock",
            "nc": nc, "measure": latency_files, "threads": opt.threads}
    log = save_dir / f"{Path(cfg).stem}-stock.log"
    print(f"training {Path(cfg).name} with stock YOLOv5 {STOCK_VERSION} (log: {log}) ...", flush=True)
    result = run_child(spec, log)
    return {"model": Path(cfg).stem, "source": f"stock YOLOv5 {STOCK_VERSION}", "box_map50": result["box_map50"],
            "box_map": result["box_map"], "parameters": result["parameters"], "gflops": result["gflops"],
            "latency_ms": result["latency_ms"], "train_s": result["wall_s"], "weights": result["last"]}


def check_stock_available() -> None:
    """Import stock YOLOv5 (offline, shimmed) in a child process, as the run will; a clear error if it can't."""
    from ..stock.runner import child_env

    probe = subprocess.run([sys.executable, "-c", "from yolostitch.stock.importer import import_stock_yolo; "
                            "import_stock_yolo(); import yolostitch.stock.runner as r; r._stand_ins(); "
                            "import yolov5.train"], capture_output=True, text=True, env=child_env())
    if probe.returncode:
        lines = [line for line in probe.stderr.strip().splitlines() if line.strip()]
        raise RuntimeError(f"--stock needs the stock YOLOv5 package, which does not import here: "
                           f"{lines[-1] if lines else 'exit ' + str(probe.returncode)}")


def _accuracy(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: metrics.get(k) for k in ("box_map50", "box_map", "mask_map50", "mask_map", "pose_map50", "pose_map")
            if metrics.get(k) is not None}


def _measure(weights: str | Path, imgsz: int, features: str, latency_files: list[str], threads: int
             ) -> dict[str, Any]:
    from ..models.summary import model_summary
    from ..weights import load_model

    summary = model_summary(load_model(weights), imgsz, verbose=False)  # unfused, as stock's summary counts
    costs = {"parameters": summary["parameters"], "gflops": summary["gflops"]}
    detect = our_detector(weights, imgsz, features)
    return {**costs, "latency_ms": latency_ms(detect, read_images(latency_files), threads),
            "latency_note": "excl. the feature extractor (maps read from the cache)" if features else ""}


def _stock_configs(cfgs: list[str]) -> list[str]:
    """The configs stock YOLOv5 has too: the built-in stock YAMLs, named as such (a path is someone's own file)."""
    return [c for c in cfgs if c in STOCK_ARCHITECTURES or c in (s.removesuffix(".yaml") for s in STOCK_ARCHITECTURES)]


def _is_feature_model(cfg: str) -> bool:
    return bool(feature_rows(load_model_config(cfg)[0]))


def _latency_files(data, n: int) -> list[str]:
    split = data.splits.get("val") or data.splits["train"]
    labels = sorted(scan_split(split, data.nc, data.kpt_shape).labels, key=lambda lab: lab.im_file)
    if not labels:
        raise ValueError(f"{data.source}: no usable images in the val split to time inference on")
    return [lab.im_file for lab in labels[:max(n, 1)]]

