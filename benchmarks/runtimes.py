"""Inference latency per runtime: our PyTorch model in fp32 and in bf16 autocast (our default), its ONNX export in
ONNX Runtime, each as detect.py runs it (letterbox + forward + NMS, batch 1), and stock YOLOv5's own inference of
the same weights as its detect.py runs it (its letterbox, Conv+BN-fused forward in fp32, its NMS; with its own
``cv2.setNumThreads(0)``).

    python benchmarks/runtimes.py                              # yolov5s at 640 on coco128 images (or generated)
    python benchmarks/runtimes.py --cfg yolov5n.yaml --imgsz 320 --images 4 --repeats 1   # smoke run

The model has random weights (latency does not depend on them; NMS sees the same few candidates in every
runtime) and is exported with ``--dynamic``, so ONNX Runtime gets the same rectangular letterbox as PyTorch.
Each runtime runs ``--images`` images ``--repeats`` times (the runtimes in turns) after two warm-up images; its
figure is the best repeat's mean milliseconds per image (other jobs share the CPU; the best repeat is the one
they disturbed least). The reference of the runtime rows is our PyTorch fp32 measured in the same run
(informational); the row against stock has the target ours (default precision) >= 1.5x stock's speed.
bf16 falls back to fp32 on a CPU without native bf16, and its row then says so.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from _common import STOCK_CV2, Figure, import_stock, stock_opencv_threads, use_this_checkout, write_json

use_this_checkout()  # measure this checkout's yolostitch

from yolostitch import build_model  # noqa: E402
from yolostitch.engine.detector import Detector  # noqa: E402
from yolostitch.export import export_weights  # noqa: E402
from yolostitch.weights import save_checkpoint  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def load_images(datasets: Path, n: int, imgsz: int) -> tuple[list[np.ndarray], str]:
    """The first ``n`` coco128 images, else ``n`` generated 4:3 ones; and where they came from."""
    folder = datasets / "coco128" / "images" / "train2017"
    files = sorted(folder.glob("*.jpg"))[:n] if folder.is_dir() else []
    if files:
        return [cv2.imread(str(f)) for f in files], f"{len(files)} coco128 images"
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (imgsz * 3 // 4, imgsz, 3), dtype=np.uint8) for _ in range(n)], \
        f"{n} random {imgsz}x{imgsz * 3 // 4} images (coco128 not found)"


class StockDetector:
    """Stock YOLOv5's detect.py inference of our checkpoint's weights, run with stock's OpenCV thread setting."""

    def __init__(self, weights: Path, cfg: str, imgsz: int):
        from yolostitch.run_stock.importer import stock_yaml_dir
        from yolostitch.run_stock.runner import load_stock_weights, stock_detector

        model = load_stock_weights(weights, stock_yaml_dir() / cfg)
        self.run = stock_detector(model.fuse(), imgsz)  # stock's detect.py fuses Conv+BN, as ours does

    def __call__(self, image: np.ndarray):
        with stock_opencv_threads():
            return self.run(image)


def best_ms_per_image(detectors: dict[str, Detector], images: list[np.ndarray], repeats: int) -> dict[str, float]:
    """Each runtime's best repeat (mean ms per image); repeats taken in turns, so a burst of other jobs' load
    falls on every runtime rather than on whichever happened to be timed then."""
    for detector in detectors.values():
        for image in images[:2]:  # warm-up: first calls allocate and plan
            detector(image)
    best = {label: float("inf") for label in detectors}
    for _ in range(repeats):
        for label, detector in detectors.items():
            start = time.perf_counter()
            for image in images:
                detector(image)
            best[label] = min(best[label], (time.perf_counter() - start) / len(images) * 1e3)
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cfg", default="yolov5s.yaml")
    p.add_argument("--imgsz", type=int, default=640)
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--datasets", type=Path, default=ROOT.parent / "shared" / "datasets")
    p.add_argument("--json", type=Path, default=None, help="also write the figures here for run_all.py")
    args = p.parse_args()
    images, source = load_images(args.datasets, args.images, args.imgsz)
    name = Path(args.cfg).stem
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        weights = save_checkpoint(Path(tmp) / f"{name}.pt", build_model(args.cfg, nc=80))
        export_weights(weights, ["onnx"], imgsz=args.imgsz, dynamic=True)
        runs = {"torch fp32": Detector(weights, args.imgsz, device="cpu", amp="off"),
                "torch bf16": Detector(weights, args.imgsz, device="cpu", amp="auto"),
                "ONNX Runtime fp32": Detector(weights.with_suffix(".onnx"), args.imgsz, device="cpu")}
        stock_missing = import_stock()
        if stock_missing is None:
            runs["stock YOLOv5"] = StockDetector(weights, args.cfg, args.imgsz)
        bf16 = runs["torch bf16"].precision.describe()
        ms = best_ms_per_image(runs, images, args.repeats)
        session = runs["ONNX Runtime fp32"].model.runner.session
        ort_threads = session.get_session_options().intra_op_num_threads or "default (physical cores)"
    settings = (f"{name} at {args.imgsz}, batch 1, {source}, best of {args.repeats} repeats; torch threads "
                f"{torch.get_num_threads()}, onnxruntime intra-op threads {ort_threads}; 'torch bf16' ran {bf16}")
    print(settings)
    for label, value in ms.items():
        print(f"{label:<20}{value:8.1f} ms/image  ({ms['torch fp32'] / value:.2f}x the speed of torch fp32)")
    reference = "ours, torch fp32"
    stage = f"{name} {args.imgsz}, batch 1, letterbox+forward+NMS"
    figures = [Figure(f"inference latency, {stage}: torch bf16 (ours) / torch fp32", ms["torch bf16"],
                      ms["torch fp32"], "ms/image", reference,
                      note="" if "bf16" in bf16 else f"no bf16 here: {bf16}"),
               Figure(f"inference latency, {stage}: ONNX Runtime fp32 / torch fp32", ms["ONNX Runtime fp32"],
                      ms["torch fp32"], "ms/image", reference),
               Figure(f"inference latency, {stage}: ONNX Runtime fp32 / torch bf16", ms["ONNX Runtime fp32"],
                      ms["torch bf16"], "ms/image", "ours, torch bf16")]
    if stock_missing is None:  # speed ratio: stock's ms over ours, so >= 1.5x means ours is 1.5x as fast
        figures.insert(0, Figure(f"inference speed, {stage} (ours, default precision / stock)",
                                 1e3 / ms["torch bf16"], 1e3 / ms["stock YOLOv5"], "images/s", STOCK_CV2,
                                 at_least=1.5,
                                 note="" if "bf16" in bf16 else f"no bf16 here: {bf16}"))
    else:
        figures.insert(0, Figure(f"inference speed, {stage} (ours, default precision / stock)", None, None,
                                 "images/s", STOCK_CV2, note=stock_missing))
    write_json(args.json, "runtimes", figures, [settings], ms_per_image=ms)


if __name__ == "__main__":
    main()
