"""Training from a feature cache vs from images, for the same neck and heads on the same frozen backbone.

    python benchmarks/feature_cache.py                      # yolov5s at 320 on the built-in data (~5 min)
    python benchmarks/feature_cache.py --cfg yolov5n.yaml   # smaller

Reference: one training epoch of the image model (``--cfg``) with its backbone frozen (``--freeze 10``: no
gradients, BatchNorm statistics fixed), data loading with the full augmentation pipeline included, as
``train.py`` runs it. Measured: one epoch of the equivalent FeatureInput model (``yolov5s-feat.yaml``: the
same neck and Detect head, plus three 1x1 adapters) on a cache of that backbone's outputs (``ckpt:`` extractor,
layers 4/6/9), loading included. Both run the same optimizer step, loss, batch size and worker count, one epoch
each after a warm-up of a few batches; the cache epoch twice: cold (its shard files evicted from the OS page
cache first, ``posix_fadvise(DONTNEED)`` after ``sync``, on Linux) and then warm (the pages the cold epoch read).
Printed: the epoch times, their ratios (target: cache <= 0.25x, each row says cold or warm), the
extraction time (paid once) and the cache size per image. ``--n-train N`` uses only the first N training images
(smoke runs); ``--json PATH`` also writes the figures for ``run_all.py``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from _common import Figure, drop_from_page_cache, subset_data_yaml, use_this_checkout, write_json
from torch.utils.data import DataLoader

use_this_checkout()  # measure this checkout's yolostitch

from yolostitch import build_model  # noqa: E402
from yolostitch.data.config import load_data_config  # noqa: E402
from yolostitch.data.dataset import MultiTaskDataset, collate, loader_workers, worker_init  # noqa: E402
from yolostitch.data.feature_cache import FeatureCache, FeatureDataset  # noqa: E402
from yolostitch.data.scan import scan_split  # noqa: E402
from yolostitch.engine.inputs import model_input  # noqa: E402
from yolostitch.engine.trainer import load_hyp  # noqa: E402
from yolostitch.extract import build_extractor  # noqa: E402
from yolostitch.extract.writer import write_cache  # noqa: E402
from yolostitch.losses import ComputeLoss  # noqa: E402
from yolostitch.weights import save_checkpoint  # noqa: E402

FEATURE_CFG = {"yolov5n.yaml": "yolov5n-feat.yaml", "yolov5s.yaml": "yolov5s-feat.yaml"}


def epoch_seconds(model, loader, hyp: dict, imgsz: int, warmup: int = 3) -> tuple[float, int]:
    """Wall time of one pass over ``loader`` (after ``warmup`` batches): load, forward, loss, backward, step."""
    warmup = min(warmup, len(loader) - 1)  # small smoke-run loaders still time at least one batch
    loss_fn = ComputeLoss(model, hyp, imgsz)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=1e-3, momentum=0.9)
    model.train()
    frozen = [m for i, m in enumerate(model.model) if not any(p.requires_grad for p in m.parameters())
              and any(True for _ in m.parameters())]
    for m in frozen:
        m.eval()
    device = torch.device("cpu")
    start, images = None, 0
    for i, batch in enumerate(loader):
        if i == warmup:
            start, images = time.perf_counter(), 0
        loss, _ = loss_fn(model(model_input(batch, device)), batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        images += len(batch["im_file"])
    return time.perf_counter() - start, images


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cfg", default="yolov5s.yaml", choices=sorted(FEATURE_CFG))
    p.add_argument("--data", default="shapes-hard.yaml")
    p.add_argument("--imgsz", type=int, default=320)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--n-train", type=int, default=None, help="use only the first N training images (smoke runs)")
    p.add_argument("--json", type=Path, default=None, help="also write the figures here for run_all.py")
    args = p.parse_args()

    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        if args.n_train:
            args.data = str(subset_data_yaml(args.data, args.n_train, tmp / "subset"))
        run(args, tmp)


def run(args: argparse.Namespace, tmp: Path) -> None:
    """Extract the cache into ``tmp``, time one epoch each way, print and (``--json``) write the figures."""
    torch.manual_seed(0)
    data = load_data_config(args.data)
    hyp = load_hyp("hyp.scratch-low.yaml")
    labels = scan_split(data.splits["train"], data.nc, None).labels
    workers = loader_workers(args.workers, args.batch_size)

    image_model = build_model(args.cfg, nc=data.nc)
    weights = save_checkpoint(tmp / "image.pt", image_model)
    extractor = build_extractor(f"ckpt:{weights}", imgsz=args.imgsz)
    start = time.perf_counter()
    summary = write_cache(extractor, args.data, tmp / "cache", args.imgsz, splits=["train"],
                          batch_size=args.batch_size, workers=args.workers)
    extract_s = time.perf_counter() - start
    cache = FeatureCache(tmp / "cache")
    dtype = cache.header["dtype"]

    for i, m in enumerate(image_model.model):  # --freeze 10: the backbone
        if i < len(image_model.yaml["backbone"]):
            m.requires_grad_(False)
    images = MultiTaskDataset(labels, args.imgsz, augment=True, hyp=hyp, use_masks=False)
    image_loader = DataLoader(images, batch_size=args.batch_size, shuffle=True, num_workers=workers,
                              collate_fn=collate, worker_init_fn=worker_init)
    feature_model = build_model(FEATURE_CFG[args.cfg], nc=data.nc, features=cache.contract)
    feats = FeatureDataset(labels, cache, augment=True, hyp=hyp)
    feature_loader = DataLoader(feats, batch_size=args.batch_size, shuffle=True, num_workers=workers,
                                collate_fn=collate, worker_init_fn=worker_init)

    image_s, n_image = epoch_seconds(image_model, image_loader, hyp, args.imgsz)
    # cold: the shards evicted from the OS page cache (they were just written, so they sat in it); warm: right after
    cold = drop_from_page_cache(sorted(p for p in (tmp / "cache").rglob("*") if p.is_file()))
    cold_s, n_cold = epoch_seconds(feature_model, feature_loader, hyp, args.imgsz)
    cache_s, n_cache = epoch_seconds(feature_model, feature_loader, hyp, args.imgsz)

    per_image_image, per_image_cache, per_image_cold = image_s / n_image, cache_s / n_cache, cold_s / n_cold
    ratio = per_image_cache / per_image_image
    cold_label = "evicted from the OS page cache first" if cold else "NOT evicted (no posix_fadvise here): warm too"
    print(f"\n{args.cfg} at {args.imgsz}, batch {args.batch_size}, {workers} workers, {len(labels)} images "
          f"({data.source}); CPU threads {torch.get_num_threads()}")
    print(f"{'epoch from images (backbone frozen)':<42}{image_s:8.1f} s  ({per_image_image * 1000:.1f} ms/image)")
    print(f"{'epoch from the feature cache, cold':<42}{cold_s:8.1f} s  ({per_image_cold * 1000:.1f} ms/image; "
          f"shards {cold_label})")
    print(f"{'epoch from the feature cache, warm':<42}{cache_s:8.1f} s  ({per_image_cache * 1000:.1f} ms/image; "
          "shards in the OS page cache: read by the epoch before)")
    print(f"{'cache / images, cold':<42}{per_image_cold / per_image_image:8.2f}x")
    print(f"{'cache / images, warm':<42}{ratio:8.2f}x  (target <= 0.25x: {'met' if ratio <= 0.25 else 'NOT met'})")
    print(f"{'extraction, paid once':<42}{extract_s:8.1f} s  for {summary['images']} images")
    print(f"{'cache size':<42}{summary['bytes_per_image'] / 2**10:8.0f} KB/image ({summary['bytes'] / 2**20:.0f} MB, "
          f"{dtype})")
    name = f"feature-cache epoch, {Path(args.cfg).stem} (cache / images, backbone frozen)"
    figures = [Figure(f"{name}, cache cold (evicted from the OS page cache)" if cold else
                      f"{name}, cache NOT evicted (no posix_fadvise: warm)", per_image_cold * 1e3,
                      per_image_image * 1e3, "ms/image", "from images", at_most=0.25),
               Figure(f"{name}, cache warm (in the OS page cache)", per_image_cache * 1e3, per_image_image * 1e3,
                      "ms/image", "from images", at_most=0.25)]
    write_json(args.json, "feature_cache", figures,
               [f"{args.cfg} at {args.imgsz}, batch {args.batch_size}, {workers} workers, {len(labels)} images; "
                f"extraction {extract_s:.1f} s for {summary['images']} images (paid once), cache "
                f"{summary['bytes_per_image'] / 2**10:.0f} KB/image ({dtype})"],
               image_s=image_s, cache_s=cache_s, cache_cold_s=cold_s, cache_evicted=cold, extract_s=extract_s,
               images=len(labels))


if __name__ == "__main__":
    main()
