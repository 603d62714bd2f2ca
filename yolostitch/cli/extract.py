"""``yolostitch extract`` / ``extract.py``: run a feature extractor over a dataset and write a feature cache."""

from __future__ import annotations

import argparse
import re
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--extractor", required=True,
                   help="torchvision:NAME[:nodes], timm:NAME[:indices], torchscript:FILE, ckpt:FILE[:LAYERS] "
                        "(a yolostitch or stock YOLOv5 checkpoint's backbone), or module:function")
    p.add_argument("--extractor-weights", default="",
                   help="weights for torchvision/timm extractors (a local state-dict file; without it they are "
                        "untrained, seeded: nothing is ever downloaded)")
    p.add_argument("--data", default="shapes.yaml", help="data YAML whose images are extracted")
    p.add_argument("--imgsz", "--img", "--img-size", type=int, default=640,
                   help="letterbox size (the training size of the model that will read the cache)")
    p.add_argument("--out", default="", help="cache directory (default runs/features/<data>-<extractor>-<imgsz>)")
    p.add_argument("--splits", nargs="+", default=None, help="data splits to extract (default: all)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--device", default="", help="cuda device, i.e. 0 or cpu")
    p.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"],
                   help="storage type of the maps")
    p.add_argument("--flip", action="store_true",
                   help="also store the maps of the horizontally flipped image (training then flips)")


def default_out(data: str, extractor: str, imgsz: int) -> Path:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{Path(data).stem}-{Path(extractor.split(':', 1)[-1]).stem}-{imgsz}")
    return Path("runs/features") / name


def run(args: argparse.Namespace) -> int:
    from ..engine.features import build_online_extractor
    from ..engine.runs import select_device
    from ..extract.writer import write_cache

    device = select_device(args.device)
    extractor = build_online_extractor(args.extractor, args.extractor_weights, args.imgsz, device)
    out = args.out or default_out(args.data, args.extractor, args.imgsz)
    write_cache(extractor, args.data, out, args.imgsz, args.splits, args.batch_size, args.workers, args.dtype,
                args.flip, device)
    return 0
