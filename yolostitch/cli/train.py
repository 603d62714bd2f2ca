"""``yolostitch train`` / ``train.py``: train a model YAML on a dataset (stock YOLOv5 flags).

Several processes (DDP): ``torchrun --nproc_per_node N train.py ...`` (one per GPU, NCCL; or CPU processes,
gloo); ``--batch-size`` is then the total over the N processes.
"""

from __future__ import annotations

import argparse
import sys

from .amp import add_amp_argument, int_at_least


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cfg", default="yolov5s.yaml", help="model YAML: a path or a built-in name")
    p.add_argument("--data", default="shapes.yaml", help="data YAML (default: the built-in synthetic data)")
    p.add_argument("--hyp", default="hyp.scratch-low.yaml", help="hyperparameter YAML")
    p.add_argument("--weights", default="", help="initial weights: a yolostitch or stock YOLOv5 .pt")
    p.add_argument("--no-class-transfer", dest="class_transfer", action="store_false",
                   help="--weights: do not copy the Detect class rows of the data's classes that the checkpoint "
                        "also names (matched case-insensitively, e.g. 'person' from a COCO model); they start fresh")
    p.add_argument("--epochs", type=int_at_least(1), default=100)
    p.add_argument("--batch-size", type=int_at_least(1, also=(-1,)), default=16,
                   help="total batch size (over all torchrun processes); -1: stock's AutoBatch, not implemented: 16")
    p.add_argument("--imgsz", "--img", "--img-size", type=int_at_least(1), default=640)
    p.add_argument("--device", default="", help="cuda device, i.e. 0 or 0,1 or cpu")
    p.add_argument("--workers", type=int_at_least(0), default=8)
    p.add_argument("--project", default="runs/train")
    p.add_argument("--name", default="exp")
    p.add_argument("--exist-ok", action="store_true")
    p.add_argument("--resume", nargs="?", const="last", default="",
                   help="resume the newest run under --project, or the given last.pt")
    p.add_argument("--freeze", nargs="+", type=int, default=[],
                   help="freeze layers: N = the first N (e.g. 10: the backbone), or a list of indices")
    p.add_argument("--stages", default="", help='training stages, e.g. "det:3,neck+det:3,all" (parts:epochs); '
                   "parts are backbone, neck and each head's task; default: the hyp file's `stages`, else all")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--optimizer", default="SGD", choices=["SGD", "Adam", "AdamW"])
    p.add_argument("--cos-lr", action="store_true")
    p.add_argument("--label-smoothing", type=float, default=0.0)
    p.add_argument("--patience", type=int, default=100, help="stop after this many epochs without improvement")
    p.add_argument("--noval", action="store_true", help="validate only after the final epoch")
    p.add_argument("--nosave", action="store_true", help="save only the final checkpoint")
    p.add_argument("--save-period", type=int, default=-1,
                   help="also keep weights/epoch{N}.pt every this many epochs (N from 0, as stock; < 1: never)")
    p.add_argument("--noautoanchor", action="store_true",
                   help="keep the model YAML's anchors (default: refit them when they match under 98%% of the "
                        "training boxes, as stock)")
    p.add_argument("--multi-scale", action="store_true", help="each batch resized to a random size in 0.5-1.5x "
                   "--imgsz (a multiple of the stride), as stock")
    p.add_argument("--local_rank", "--local-rank", type=int, default=-1, help="set by python -m "
                   "torch.distributed.launch (accepted, as stock; the LOCAL_RANK environment variable it also sets "
                   "is what is read)")
    p.add_argument("--quad", action="store_true", help="quad dataloader: each 4 training images become one at "
                   "twice --imgsz (2 x 2 tiles, or the first upscaled), a quarter as many per batch, as stock")
    p.add_argument("--image-weights", action="store_true", help="draw training images weighted towards rare "
                   "classes and classes that validate badly, as stock")
    p.add_argument("--rect", action="store_true", help="rectangular training: images sorted by aspect ratio, each "
                   "batch letterboxed to its own shape; no mosaic and no shuffling, as stock")
    p.add_argument("--noplots", action="store_true", help="save no plot files (labels, batches, results, val)")
    p.add_argument("--single-cls", action="store_true", help="train multi-class data as one class ('item'), as stock")
    p.add_argument("--cache", nargs="?", const="ram", default="", choices=["ram", "disk"],
                   help="cache decoded images: --cache or --cache ram in RAM, --cache disk as .npy files beside "
                        "the images")
    p.add_argument("--balance", default="", choices=["", "fixed", "uncertainty", "dwa"],
                   help="how task losses combine: fixed gains from the hyp file (default), learned uncertainty "
                        "weights, or dynamic weight average")
    p.add_argument("--features", default="", help="train a FeatureInput model (e.g. yolov5s-feat.yaml) on this "
                   "feature cache (made by extract.py); its contract fills the YAML's keys, channels and strides")
    p.add_argument("--extractor", default="", help="or run this extractor online, frozen, on the augmented images "
                   "(torchvision:NAME, timm:NAME, torchscript:FILE, ckpt:FILE[:LAYERS], module:function)")
    p.add_argument("--extractor-weights", default="", help="weights file for a torchvision/timm --extractor")
    p.add_argument("--stitch-init", nargs="?", type=int, const=64, default=0, metavar="N",
                   help="fit the FeatureInput adapters by least squares on N training images (default 64) so "
                        "that --weights' neck and heads see what its own backbone gave them")
    p.add_argument("--evolve", nargs="?", type=int, const=300, default=0, metavar="N",
                   help="evolve the hyperparameters over N short trainings (default 300), as stock; the fittest "
                        "go to runs/evolve/exp/hyp_evolve.yaml")
    p.add_argument("--sync-bn", action="store_true", help="under torchrun, BatchNorm statistics over all the "
                   "processes' images (SyncBatchNorm; GPUs only)")
    add_amp_argument(p)


def run(args: argparse.Namespace) -> int:
    from ..engine.trainer import TrainOptions, train

    if args.batch_size == -1:  # stock: AutoBatch on CUDA, 16 on a CPU
        print("WARNING: --batch-size -1 (stock's AutoBatch) is not implemented here: using 16", file=sys.stderr)
        args.batch_size = 16
    freeze = list(range(args.freeze[0])) if len(args.freeze) == 1 else args.freeze
    options = {k: v for k, v in vars(args).items() if k in TrainOptions.__dataclass_fields__}
    if args.evolve:
        from ..engine.evolve import evolve

        evolve(TrainOptions(**{**options, "freeze": freeze}), args.evolve)
        return 0
    train(TrainOptions(**{**options, "freeze": freeze}))
    return 0
