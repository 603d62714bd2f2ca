"""Training dataloader throughput: ours vs stock YOLOv5's, same images, same augmentation recipe.

    python benchmarks/dataloader.py                      # coco128 from ../shared, imgsz 640, 2 workers

Rows: stock YOLOv5 (boxes), ours (boxes), ours carrying instance masks (coco128-seg polygons) and
keypoint arrays (K=17, all absent) as well; ours is train.py's loader (``training_loader``: images and masks
reach the main process through shared slots made once, see ``yolostitch/data/shared_batches.py``), stock's its
``create_dataloader``; first as both default to (images decoded on every read), then
with decoded images cached in RAM on both sides (stock's ``--cache ram``, our ``cache_images``). Each row is timed
over whole epochs after one warm-up epoch, with a loader of its own whose workers are shut down before the next
row starts. The rows run ``--repeats`` times in mirrored order (stock, ours, ours multi-task, then backwards), so
a load that drifts on a shared machine weighs on every row alike; a row's figure is its images over its seconds,
summed. The ratio column is images/s against the stock row measured in the same run. Without stock YOLOv5 installed,
only our rows are timed (the ratio says how to install it); without coco128, nothing is (``--json`` then
records the figures as skipped). ``--json PATH`` also writes the figures for ``run_all.py``.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path
from typing import Callable

import cv2
import torch
import yaml
from _common import STOCK_CV2, Figure, import_stock, stock_opencv_threads, use_this_checkout, write_json

ROOT = Path(__file__).resolve().parents[1]
use_this_checkout()

from yolostitch.data.augment import DEFAULT_AUGMENT  # noqa: E402
from yolostitch.data.dataset import MultiTaskDataset, worker_init  # noqa: E402
from yolostitch.data.scan import scan_split  # noqa: E402
from yolostitch.data.shared_batches import training_loader  # noqa: E402


def throughput(loader, epochs: int) -> tuple[int, float]:
    """Images and seconds over ``epochs`` epochs, after a warm-up epoch (workers start, caches fill)."""
    for _ in loader:
        pass
    n, start = 0, time.perf_counter()
    for _ in range(epochs):
        for batch in loader:
            n += len(batch[0] if isinstance(batch, (list, tuple)) else batch["img"])
    return n, time.perf_counter() - start


def ours(images: Path, args, kpt_shape=None, cache=False) -> tuple[int, float]:
    scan = scan_split([images], nc=80, kpt_shape=kpt_shape, cache=False)
    dataset = MultiTaskDataset(scan.labels, imgsz=args.imgsz, augment=True, hyp=DEFAULT_AUGMENT,
                               kpt_shape=kpt_shape, flip_idx=list(range(kpt_shape[0])) if kpt_shape else None,
                               cache_images=cache)
    loader = training_loader(dataset, args.batch, args.workers, worker_init_fn=worker_init, borrow=True)  # train.py's
    return throughput(loader, args.epochs)


def stock(images: Path, args, cache=False) -> tuple[int, float]:
    from yolostitch.run_stock.importer import import_stock_yolo, stock_yaml_dir

    import_stock_yolo()
    from yolov5.utils.dataloaders import create_dataloader

    hyp = yaml.safe_load((stock_yaml_dir().parent / "data" / "hyps" / "hyp.scratch-low.yaml").read_text())
    with stock_opencv_threads():  # stock's own setting (ours keeps OpenCV's default); workers fork inside
        loader, _ = create_dataloader(str(images), args.imgsz, args.batch, 32, hyp=hyp, augment=True,
                                      workers=args.workers, shuffle=True, prefix="", cache="ram" if cache else False)
        return throughput(loader, args.epochs)


def mirrored_rates(rows: dict[str, Callable[[], tuple[int, float]]], repeats: int) -> dict[str, float]:
    """Images/s of each row, run ``repeats`` times in alternately forward and backward order (A B C C B A ...).

    Each call builds and drops its own loader; collecting garbage after it makes sure its workers are gone
    before the next row is timed (stock's loader keeps one iterator, and so its workers, alive)."""
    images, seconds = dict.fromkeys(rows, 0), dict.fromkeys(rows, 0.0)
    order = list(rows)
    for repeat in range(repeats):
        for label in order if repeat % 2 == 0 else order[::-1]:
            n, s = rows[label]()
            gc.collect()
            images[label] += n
            seconds[label] += s
    return {label: images[label] / seconds[label] for label in rows}


ROWS = (("boxes", False), ("boxes + masks + keypoints", True))  # our rows: label, with polygons + keypoints


def figure_name(label: str, cache: bool) -> str:
    return f"dataloader images/s, {label}{', images cached in RAM' if cache else ''} (ours / stock)"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", type=Path, default=ROOT.parent / "shared" / "datasets")
    p.add_argument("--imgsz", type=int, default=640)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--repeats", type=int, default=2, help="runs of each row, in mirrored order (see above)")
    p.add_argument("--json", type=Path, default=None, help="also write the figures here for run_all.py")
    args = p.parse_args()
    boxes = args.datasets / "coco128" / "images" / "train2017"
    polygons = args.datasets / "coco128-seg" / "images" / "train2017"
    settings = (f"coco128, imgsz {args.imgsz}, batch {args.batch}, {args.workers} workers, {args.epochs} epochs, "
                f"{args.repeats} mirrored repeats")
    if not boxes.is_dir() or not polygons.is_dir():
        missing = f"coco128 / coco128-seg not found under {args.datasets} (pass --datasets)"
        write_json(args.json, "dataloader", [Figure(figure_name(label, cache), at_least=1.0,
                                                    note=f"skipped: {missing}")
                                             for cache in (False, True) for label, _ in ROWS])
        sys.exit(0 if args.json else missing)
    stock_missing = import_stock()
    print(f"dataloader, imgsz {args.imgsz}, batch {args.batch}, {args.workers} workers, mosaic on, "
          f"{args.epochs} epochs timed after one warm-up epoch, rows repeated {args.repeats}x in mirrored order")
    if stock_missing:
        print(stock_missing)
    print(f"{'loader':<50}{'images/s':>10}{'vs stock':>10}")
    figures = []
    for cache in (False, True):
        suffix = ", images cached in RAM" if cache else ""
        rows = {label: (lambda multitask=multitask: ours(polygons, args, [17, 3], cache) if multitask
                        else ours(boxes, args, cache=cache)) for label, multitask in ROWS}
        if not stock_missing:
            rows = {"stock": lambda: stock(boxes, args, cache), **rows}
        rates = mirrored_rates(rows, args.repeats)
        reference = rates.pop("stock", None)
        if reference is not None:
            print(f"{'stock YOLOv5 (boxes' + suffix + ')':<50}{reference:>10.1f}{1:>9.2f}x", flush=True)
        for label, rate in rates.items():
            ratio = f"{rate / reference:>9.2f}x" if reference else "      n/a"
            print(f"{'yolostitch (' + label + suffix + ')':<50}{rate:>10.1f}{ratio}", flush=True)
            figures.append(Figure(figure_name(label, cache), rate, reference, "images/s", STOCK_CV2,
                                  at_least=1.0, note=stock_missing or ""))
    threads = f"OpenCV threads: stock {0} (it sets cv2.setNumThreads(0)), ours {cv2.getNumThreads()} (OpenCV's default)"
    print(threads)
    write_json(args.json, "dataloader", figures, [settings, threads])


if __name__ == "__main__":
    main()
