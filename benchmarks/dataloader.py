"""Training dataloader throughput: ours vs stock YOLOv5's, same images, same augmentation recipe.

    python benchmarks/dataloader.py                      # coco128 from ../shared, imgsz 640, 2 workers

Rows: stock YOLOv5 (boxes), ours (boxes), ours carrying instance masks (coco128-seg polygons) and
keypoint arrays (K=17, all absent) as well; first as both default to (images decoded on every read), then
with decoded images cached in RAM on both sides (stock's ``--cache ram``, our ``cache_images``). Each row is timed over whole epochs after one warm-up epoch;
the ratio column is images/s against the stock row measured in the same run.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the offline, shimmed stock YOLOv5 import lives with the tests

from yolostitch.data.augment import DEFAULT_AUGMENT  # noqa: E402
from yolostitch.data.dataset import MultiTaskDataset, collate, worker_init  # noqa: E402
from yolostitch.data.scan import scan_split  # noqa: E402


def throughput(loader, epochs: int) -> float:
    for _ in loader:  # warm-up: workers start, caches fill
        pass
    n, start = 0, time.perf_counter()
    for _ in range(epochs):
        for batch in loader:
            n += len(batch[0] if isinstance(batch, (list, tuple)) else batch["img"])
    return n / (time.perf_counter() - start)


def ours(images: Path, args, kpt_shape=None, cache=False) -> float:
    scan = scan_split([images], nc=80, kpt_shape=kpt_shape, cache=False)
    dataset = MultiTaskDataset(scan.labels, imgsz=args.imgsz, augment=True, hyp=DEFAULT_AUGMENT,
                               kpt_shape=kpt_shape, flip_idx=list(range(kpt_shape[0])) if kpt_shape else None,
                               cache_images=cache)
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch, shuffle=True, num_workers=args.workers,
                                         collate_fn=collate, persistent_workers=args.workers > 0,
                                         worker_init_fn=worker_init)
    return throughput(loader, args.epochs)


def stock(images: Path, args, cache=False) -> float:
    import stock_yolov5

    stock_yolov5.import_stock_yolo()
    from yolov5.utils.dataloaders import create_dataloader

    hyp = yaml.safe_load((stock_yolov5.stock_yaml_dir().parent / "data" / "hyps" / "hyp.scratch-low.yaml").read_text())
    loader, _ = create_dataloader(str(images), args.imgsz, args.batch, 32, hyp=hyp, augment=True,
                                  workers=args.workers, shuffle=True, prefix="", cache="ram" if cache else False)
    return throughput(loader, args.epochs)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", type=Path, default=ROOT.parent / "shared" / "datasets")
    p.add_argument("--imgsz", type=int, default=640)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--epochs", type=int, default=3)
    args = p.parse_args()
    boxes = args.datasets / "coco128" / "images" / "train2017"
    polygons = args.datasets / "coco128-seg" / "images" / "train2017"
    if not boxes.is_dir():
        sys.exit(f"coco128 not found under {args.datasets} (pass --datasets)")
    print(f"dataloader, imgsz {args.imgsz}, batch {args.batch}, {args.workers} workers, mosaic on, "
          f"{args.epochs} epochs timed after one warm-up epoch")
    print(f"{'loader':<50}{'images/s':>10}{'vs stock':>10}")
    for cache in (False, True):
        suffix = ", images cached in RAM" if cache else ""
        rows = [(f"stock YOLOv5 (boxes{suffix})", stock(boxes, args, cache)),
                (f"yolostitch (boxes{suffix})", ours(boxes, args, cache=cache)),
                (f"yolostitch (boxes + masks + keypoints{suffix})", ours(polygons, args, [17, 3], cache))]
        for name, rate in rows:
            print(f"{name:<50}{rate:>10.1f}{rate / rows[0][1]:>9.2f}x", flush=True)


if __name__ == "__main__":
    main()
