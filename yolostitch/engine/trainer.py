"""Training in stock YOLOv5's recipe: SGD/Adam(W) in three parameter groups, warmup, nbs=64 gradient
accumulation, EMA, mixed precision (``--amp``: fp16 on CUDA as stock, bf16 on CPUs with native bf16; see
:mod:`.precision`), gradient clipping; a checkpoint after every epoch, written atomically, from
which ``--resume`` continues a killed run. Under ``torchrun --nproc_per_node N`` the processes train one model
with DistributedDataParallel (see :mod:`.distributed`).
"""

from __future__ import annotations

import contextlib
import difflib
import json
import math
import os
import random
import shutil
import sys
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import yaml
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm
from ultralytics.utils.torch_utils import ModelEMA

from ..data.config import data_yaml_dirs, load_data_config
from ..data.dataset import MultiTaskDataset, collate, loader_workers, worker_init
from ..data.feature_cache import FeatureCache, FeatureDataset
from ..data.quad import LOSS_SCALE as QUAD_LOSS_SCALE, quad_collate
from ..data.scan import report_skipped, scan_data_split
from ..data.shared_batches import training_loader
from ..errors import ConfigError, FlagError
from ..losses import ComputeLoss
from ..models import build_model
from ..weights import (atomic_save, checkpoint_dict, describe_transfer, layer_correspondence, load_model, read_weights,
                       transfer_weights)
from ..weights.checkpoint import plain_state
from . import results_log
from .early_stop import EarlyStopping
from .plots import draw_batch, plot_label_statistics
from .runs import increment_path
from ..yaml_io import read_yaml_mapping
from . import distributed
from .features import build_online_extractor, feature_record
from .image_weights import ImageWeightSampler, per_class_maps
from .inputs import model_input, multi_scale, stride_shape
from .resume import read_training_checkpoint, recorded_hash, resume_options, run_folder
from .precision import precision_for, to_float
from .stages import apply_stage, param_groups, parse_stages, stage_at
from .stitch_init import fit_adapters
from .autoanchor import check_anchors
from .tensorboard_log import TensorBoardLog
from .validator import dataset_options, evaluate, feature_val_loader, fitness, flat_metrics, summary_line, val_loader
from ..tasks import required_hyp, task_hyp_keys, tasks_of
from .. import plugins

NBS = 64  # stock's nominal batch size: gradients accumulate up to it, weight decay scales with it (hyp `nbs`)
REQUIRED_HYP = ("lr0", "lrf", "momentum", "weight_decay", "warmup_epochs", "warmup_momentum", "warmup_bias_lr",
                *required_hyp())  # the optimiser's, then the tasks' (detection: box, cls, cls_pw, obj, ...)


@dataclass
class TrainOptions:
    cfg: str = "yolov5s.yaml"
    data: str = "shapes.yaml"
    hyp: str = "hyp.scratch-low.yaml"
    weights: str = ""
    epochs: int = 100
    batch_size: int = 16  # in total: torchrun's N processes load batch_size / N images each
    imgsz: int = 640
    device: str = ""
    workers: int = 8
    project: str = "runs/train"
    name: str = "exp"
    exist_ok: bool = False
    resume: str = ""  # "" (no), "last" (newest run under project), or a last.pt path
    freeze: list[int] = field(default_factory=list)  # layer indices kept fixed (weights and BN statistics)
    stages: str = ""  # e.g. "det:3,neck+det:3,all" (overrides the hyp file's `stages`)
    seed: int = 0
    optimizer: str = "SGD"
    cos_lr: bool = False
    label_smoothing: float = 0.0
    patience: int = 100
    noval: bool = False
    nosave: bool = False
    noautoanchor: bool = False  # keep the YAML's anchors even if they fit the training boxes poorly
    single_cls: bool = False  # train every class as one ('item'), as stock's --single-cls
    save_period: int = -1  # also keep weights/epoch{N}.pt every this many epochs (< 1: never), as stock
    multi_scale: bool = False  # each batch at a random size in 0.5-1.5x imgsz, as stock's --multi-scale
    quad: bool = False  # each 4 training images as one at 2x imgsz (tiled or upscaled), as stock's --quad
    rect: bool = False  # rectangular batches (images by aspect ratio, no mosaic, not shuffled), as stock's --rect
    image_weights: bool = False  # draw images weighted by rare and badly validated classes, as stock's
    noplots: bool = False  # no labels.jpg, train_batch*.jpg, results.png or validation plots (stock's --noplots)
    cache: bool | str = ""  # --cache: "" (none), "ram" (also True) or "disk", as stock's
    balance: str = ""  # task balancing: fixed | uncertainty | dwa ("" = the hyp file's `balance`, else fixed)
    features: str = ""  # a feature cache (extract.py) to train a FeatureInput model on
    extractor: str = ""  # or an extractor run online (frozen) on the augmented images
    extractor_weights: str = ""
    stitch_init: int = 0  # fit the adapters by least squares on this many images against --weights' backbone
    sync_bn: bool = False  # SyncBatchNorm across the processes of a torchrun job (GPUs)
    class_transfer: bool = True  # --weights: Detect class rows of the classes the checkpoint names too
    amp: str = "auto"  # mixed precision (engine.precision): auto (bf16 on native-bf16 CPUs, fp16 on CUDA) | off


def load_hyp(hyp: str | Path) -> dict[str, Any]:
    """A hyperparameter YAML: a path, or a name under data/hyps (``hyp.scratch-low.yaml``)."""
    candidates = [Path(hyp)] + [d / "hyps" / Path(hyp).name for d in data_yaml_dirs()]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        raise FileNotFoundError(f"--hyp {hyp}: not found as a file nor in {data_yaml_dirs()[0] / 'hyps'}")
    values = read_yaml_mapping(path, ConfigError, "hyperparameter file")
    missing = [k for k in REQUIRED_HYP if k not in values]
    if missing:
        raise ConfigError(f"{path}: missing hyperparameters {missing}")
    known = set(REQUIRED_HYP) | set(task_hyp_keys()) | set(_shipped_hyp_keys()) | {"stages", "nbs", "warmup_min_iters"}
    for key, value in values.items():
        numeric = key in known and key not in ("stages", "balance") or key.startswith("w_")
        if numeric and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ConfigError(f"{path}: {key} must be a number, got {value!r}")
        if key not in known and not key.startswith("w_"):
            close = difflib.get_close_matches(key, sorted(known), n=1)
            print(f"WARNING: {path}: {key!r} is not a hyperparameter yolostitch reads, ignored"
                  + (f" (did you mean {close[0]!r}?)" if close else ""), file=sys.stderr)
    return values


def _shipped_hyp_keys() -> list[str]:
    """Every key of the hyperparameter files shipped in data/hyps: what the code reads, spelled as stock does."""
    keys: list[str] = []
    for folder in data_yaml_dirs():
        for path in sorted((folder / "hyps").glob("*.yaml")):
            keys += list(read_yaml_mapping(path, ConfigError, "hyperparameter file"))
    return keys


def train(opt: TrainOptions) -> dict[str, Any]:
    """Run a training; return the final metrics. Writes weights/{last,best}.pt, results.csv, metrics.json.

    Launched by torchrun with WORLD_SIZE > 1, this process joins the job and trains its DDP replica on its
    shard of the data; rank 0 alone prints, validates and writes files (every rank resumes the same checkpoint).
    """
    with distributed.quiet_unless_main():
        ckpt = None
        if opt.resume:
            ckpt, opt = _resume_state(opt)
        with distributed.process_group(opt.device) as device, _removed_if_failed() as new_folders:
            return _train(opt, ckpt, device, new_folders)


@contextlib.contextmanager
def _removed_if_failed() -> Iterator[list[Path]]:
    """Yields a list for the run folders a training creates; if the training fails, those holding no checkpoint
    yet (only opt.yaml, hyp.yaml, label plots) are removed, so a mistake in a flag or file leaves no empty run
    behind and the next run keeps its name. Folders that existed before (--exist-ok) are never touched."""
    created: list[Path] = []
    try:
        yield created
    except BaseException:
        for folder in created:
            if folder.is_dir() and not any(folder.rglob("*.pt")):
                shutil.rmtree(folder, ignore_errors=True)
        raise


def _train(opt: TrainOptions, ckpt: dict | None, device: torch.device, new_folders: list[Path]) -> dict[str, Any]:
    main, world = distributed.is_main(), distributed.world_size()
    batch_size = distributed.per_process_batch(opt.batch_size)  # this process's share of --batch-size
    sync_bn = distributed.check_sync_bn(opt.sync_bn, device)
    precision = precision_for(opt.amp, device)  # --amp: the forwards' autocast; loss, EMA, weights stay fp32
    with distributed.main_first():  # before the run folder: a bad data YAML leaves none behind; generated once
        data = load_data_config(opt.data)
        data.split("train", "to train on")  # before the run folder is made
    if opt.single_cls:
        data = data.single_class()
    reused = bool(ckpt) or opt.exist_ok and (Path(opt.project) / opt.name).exists()
    save_dir = run_folder(opt.resume) if ckpt else distributed.broadcast_object(  # resume: where last.pt is
        increment_path(Path(opt.project) / opt.name, opt.exist_ok) if main else None)
    if main:
        if not reused:
            new_folders.append(save_dir)
        (save_dir / "weights").mkdir(parents=True, exist_ok=True)
    _seed_everything(opt.seed + distributed.rank(), device)  # augmentations differ per process; rank 0 = one process
    hyp = ckpt["hyp"] if ckpt else {**load_hyp(opt.hyp), "label_smoothing": opt.label_smoothing}
    if opt.features and opt.extractor:
        raise FlagError("--features and --extractor: give one (a cache, or an extractor to run online)")
    if opt.quad and (opt.features or opt.extractor):
        raise FlagError("--quad joins images into larger ones; with --features or --extractor the model reads "
                        "feature maps made at one size: drop one of them")
    if opt.quad and batch_size % 4:
        raise FlagError(f"--quad joins each 4 training images into one: --batch-size must be a multiple of 4"
                        f"{' per process' if world > 1 else ''}, got {batch_size}")
    if opt.multi_scale and (opt.features or opt.extractor):
        raise FlagError("--multi-scale resizes images; with --features or --extractor the model reads feature "
                        "maps made at one size: drop one of them")
    if opt.image_weights and (opt.rect or distributed.world_size() > 1):
        raise FlagError("--image-weights draws images one by one; it cannot be combined with "
                        + ("--rect (batches of one shape)" if opt.rect else "several processes (as in stock)"))
    if opt.rect and (opt.features or opt.extractor):
        raise FlagError("--rect letterboxes each batch to its own shape; with --features or --extractor the model "
                        "reads feature maps made at one size: drop one of them")
    cache = FeatureCache(opt.features) if opt.features else None
    extractor = build_online_extractor(opt.extractor, opt.extractor_weights, opt.imgsz, device,
                                       expected_hash=recorded_hash(ckpt) if ckpt else None) if opt.extractor else None
    contract = cache.contract if cache else extractor.contract() if extractor else None
    imgsz = cache.imgsz if cache else opt.imgsz
    if cache is not None:
        print(f"features: {cache.describe()}")
        if opt.imgsz not in (imgsz, TrainOptions.imgsz):
            print(f"--imgsz {opt.imgsz}: the cache was extracted at {imgsz}; training at {imgsz}")
    model = _build(opt, data, ckpt, contract).to(device)
    if cache is None:  # stock's check_img_size: a multiple of the largest stride (at least 32), with a warning
        imgsz = stride_shape(imgsz, max(int(model.stride.max()), 32))[0]
    if model.feature_inputs and contract is None:
        raise FlagError(f"{opt.cfg} takes feature maps {list(model.feature_contract())}: pass --features DIR (a "
                        "cache made by extract.py) or --extractor SPEC")
    tasks = tasks_of(model)
    for task in tasks:
        task.check_data(data, opt.cfg)
    model.names, model.hyp = dict(data.names), hyp
    layers = len(model.model)
    bad = [i for i in opt.freeze if not 0 <= i < layers]
    if bad and opt.freeze == list(range(len(opt.freeze))):  # --freeze N: the first N layers
        raise FlagError(f"--freeze {len(opt.freeze)}: the first {len(opt.freeze)} layers, but the model has "
                        f"{layers} (0..{layers - 1})")
    if bad:
        raise FlagError(f"--freeze {bad}: the model has layers 0..{layers - 1}")
    stages = parse_stages(opt.stages or hyp.get("stages"), list(model.parts()))
    if main:
        (save_dir / "opt.yaml").write_text(yaml.safe_dump(asdict(opt), sort_keys=False))
        (save_dir / "hyp.yaml").write_text(yaml.safe_dump(hyp, sort_keys=False))

    with distributed.main_first():  # rank 0 writes the label cache, the others read it
        train_scan = scan_data_split(data, data.split("train", "to train on"))
    report_skipped(train_scan.problems)
    plots = main and not opt.noplots  # rank 0 draws, unless told not to
    if not ckpt and plots:
        plot_label_statistics(train_scan.labels, data.names, save_dir / "labels.jpg")
    train_options = dataset_options(tasks, data, train=True)  # tasks absent: their labels are not prepared
    if train_options.get("kpt_shape") and not train_options.get("flip_idx") and (hyp.get("fliplr", 0.5) or hyp.get("flipud", 0.0)):
        print(f"{data.source} gives no flip_idx, so images with keypoints are not flipped (a flip would swap "
              "left and right keypoints): add flip_idx to the data YAML to flip them")
    val_options = dataset_options(tasks, data)
    if cache is not None:
        dataset = FeatureDataset(train_scan.labels, cache, augment=True, hyp=hyp, **train_options)
        flips = (f"horizontal flips on (p={dataset.fliplr})" if dataset.fliplr
                 else "no flips either (extract with --flip to cache flipped maps)")
        print(f"training from cached features: mosaic, HSV, scale, translate and mixup need the pixels and are off; "
              f"{flips}")
    else:
        dataset = MultiTaskDataset(train_scan.labels, imgsz, augment=True, hyp=rect_hyp(hyp) if opt.rect else hyp,
                                   cache_images=opt.cache, rect=opt.rect, batch_size=opt.batch_size,
                                   stride=max(int(model.stride.max()), 32), pad=0.0, **train_options)
        if opt.rect:  # shapes per block of --batch-size sorted images: under DDP each process gets a share of it
            print("--rect: batches of images of like aspect ratio, each letterboxed to its own shape; mosaic, "
                  "mixup and copy-paste off and no shuffling, as stock")
    if opt.stitch_init and not ckpt:
        _stitch_init(model, opt, dataset.labels, cache, extractor, imgsz, device)
    anchored = next((t.head for t in tasks if t.anchor), None)  # the detection head, if the model has one
    if not ckpt and not opt.noautoanchor and hasattr(anchored, "anchors"):  # stock runs it on every new run
        check_anchors(anchored, dataset.labels, imgsz, hyp["anchor_t"], seed=opt.seed)
    distributed.broadcast_module(model)  # every replica starts from rank 0's weights
    if sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # same parameter objects, new norm modules
    if opt.image_weights:
        sampler = ImageWeightSampler(dataset.labels, model.nc, opt.seed)
    else:
        sampler = distributed.train_sampler(dataset, opt.seed, shuffle=not opt.rect)  # None: the loader's own order
    generator = torch.Generator().manual_seed(opt.seed + distributed.rank())
    workers = loader_workers(min(opt.workers, distributed.cores_per_process()), batch_size)
    loader = training_loader(dataset, batch_size, workers, shuffle=not opt.rect, sampler=sampler, generator=generator,
                             worker_init_fn=worker_init, borrow=True,  # a step is done with its batch
                             collate_fn=quad_collate if opt.quad else collate)
    val_split = data.val_sources()
    with distributed.main_first():
        val_labels = scan_data_split(data, val_split).labels
    if cache is not None:
        vloader = feature_val_loader(val_labels, cache, batch_size * 2, workers=opt.workers, **val_options)
    else:
        vloader = val_loader(val_labels, imgsz, batch_size * 2, int(model.stride.max()), workers=opt.workers,
                             **val_options)
    record = feature_record(contract, cache, extractor, opt.extractor_weights) if contract else None
    if opt.stitch_init and not ckpt and main:  # where training starts: the stitched model before any step
        start = flat_metrics(evaluate(model, vloader, device, data_options=data.raw, extractor=extractor,
                                      precision=precision))
        print("stitched model before training: " + summary_line(start))

    nbs = int(hyp.get("nbs", NBS))
    accumulate = max(round(nbs / opt.batch_size), 1)
    hyp_wd = hyp["weight_decay"] * opt.batch_size * accumulate / nbs
    compute_loss = ComputeLoss(model, hyp, imgsz, balance=opt.balance or hyp.get("balance", "fixed"),
                               data_options=data.raw)
    compute_loss.balance.to(device)
    optimizer = _optimizer(model, opt.optimizer, hyp["lr0"], hyp["momentum"], hyp_wd, compute_loss.balance)
    lf = (_one_cycle(1, hyp["lrf"], opt.epochs) if opt.cos_lr
          else lambda x: (1 - x / opt.epochs) * (1.0 - hyp["lrf"]) + hyp["lrf"])
    ema = ModelEMA(model)
    start_epoch, stopper = 0, EarlyStopping(opt.patience)
    if ckpt:
        optimizer.load_state_dict(ckpt["train_state"]["optimizer"])
        ema.ema.load_state_dict(ckpt["model"])  # the averaged weights go on from where they were
        ema.updates = ckpt["train_state"]["ema_updates"]
        start_epoch = ckpt["epoch"] + 1
        stopper.load_state_dict(ckpt["train_state"])  # best fitness and stale epochs go on counting
        if "balance" in ckpt["train_state"]:
            compute_loss.balance.load_state_dict(ckpt["train_state"]["balance"])
    scaler = precision.grad_scaler()  # enabled for fp16 only (CUDA), as stock; bf16 needs no loss scaling
    nb = len(loader)
    warmup_iters = max(round(hyp["warmup_epochs"] * nb), int(hyp.get("warmup_min_iters", 100)))  # stock: >= 100
    last_step, metrics = -1, {}
    csv_path = save_dir / "results.csv"
    if main:
        results_log.truncate(csv_path, start_epoch)  # a killed run may have logged the epoch it did not checkpoint
    board = TensorBoardLog(save_dir, enabled=main)  # curves too, when tensorboard is installed
    shards = f" ({batch_size} in each of {world} processes)" if world > 1 else ""
    print(f"training {opt.cfg} on {data.source}: {len(dataset)} images, {opt.epochs} epochs, batch {opt.batch_size}"
          f"{shards}, imgsz {imgsz}, {device}, {precision.describe()}; results to {save_dir}")
    if opt.quad:
        print(f"--quad: each 4 training images as one of {2 * imgsz} px (2 x 2 tiles or the first upscaled), "
              f"{batch_size // 4} per batch, loss x {QUAD_LOSS_SCALE}, as stock")
    net = model  # what runs the forward: the model, or its DDP wrapper
    if world > 1 and precision.channels_last:  # DDP's gradient buckets take the parameters' strides: match the
        model.to(memory_format=torch.channels_last)  # channels-last gradients (a 1x1 conv's are ambiguous otherwise)
    sparse = any(t.sparse_loss for t in tasks)  # their terms skip a batch without their labels
    for epoch in range(start_epoch, opt.epochs):
        frozen = apply_stage(model, optimizer, stage_at(stages, epoch), set(opt.freeze))
        net = distributed.wrap(model, device, net, find_unused=sparse)  # DDP over this stage's trainable parameters
        if sampler is not None:
            sampler.set_epoch(epoch)
        for g in optimizer.param_groups:
            g["lr"] = g["initial_lr"] * lf(epoch) * g["lr_scale"]
        model.train()
        for m in frozen:  # frozen parts keep their BatchNorm statistics
            m.eval()
        mean_terms: dict[str, float] = {}
        bar = tqdm(enumerate(loader), total=nb, desc=f"{epoch + 1}/{opt.epochs}", leave=True,
                   mininterval=0.5 if sys.stderr.isatty() else 30, disable=not main)
        optimizer.zero_grad()
        for i, batch in bar:
            ni = i + nb * epoch
            x = model_input(batch, device, extractor)
            if opt.multi_scale:
                x = multi_scale(x, imgsz, int(model.stride.max()))
            if ni <= warmup_iters:
                accumulate = _warmup(optimizer, ni, warmup_iters, epoch, lf, hyp, opt.batch_size)
            step = ni - last_step >= accumulate
            with distributed.no_sync(net, step):  # gradients are reduced over the processes only before a step
                with precision.autocast():
                    outputs = net(precision.prepare(x))
                loss, terms = compute_loss(to_float(outputs), batch)  # in fp32, outside autocast
                if opt.quad:
                    loss = loss * QUAD_LOSS_SCALE
                # ComputeLoss returns (mean loss) x (images in the batch), as stock, so one process with batch B
                # steps on B * g. N processes hold B / N images each and DDP *averages* their gradients: (B / N)
                # * g. Times N (stock's loss * WORLD_SIZE) that is B * g again, exactly so when the shards' mean
                # losses average to the batch's (test_ddp.py). nbs accumulation and weight decay use B too.
                scaler.scale(loss * world).backward()
            if step:
                distributed.average_gradients(compute_loss.balance.parameters())  # outside DDP: as it does
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), max_norm=10.0)
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad()
                ema.update(model)
                last_step = ni
            for k, v in terms.items():
                mean_terms[k] = (mean_terms.get(k, 0.0) * i + float(v)) / (i + 1)
            bar.set_postfix({**{k: f"{v:.4f}" for k, v in mean_terms.items()}, "inst": len(batch["batch_idx"]),
                             "lr": f"{optimizer.param_groups[0]['lr']:.4g}"}, refresh=False)
            if plots and epoch == start_epoch and i < 2 and "img" in batch:
                board.image(draw_batch(batch, save_dir / f"train_batch{i}.jpg", data.names), epoch)
        mean_terms = distributed.mean_across_ranks(mean_terms)  # over every process's batches
        compute_loss.balance.end_epoch({t: sum(mean_terms.get(n, 0.0) for n in terms)
                                        for t, terms in compute_loss.task_terms.items()})
        lrs = {g["part"]: g["lr"] for g in optimizer.param_groups if g["kind"] == "weight"}
        final = epoch + 1 == opt.epochs
        validated = main and (not opt.noval or final)  # rank 0 validates; the others wait for its decision below
        if validated:
            results = evaluate(ema.ema, vloader, device, plot_dir=save_dir if final and plots else None,
                               data_options=data.raw, extractor=extractor, precision=precision)
            metrics = flat_metrics(results)
            if opt.image_weights:
                sampler.update(per_class_maps(results, model.names))
        best = stopper.update(fitness(metrics) if validated else None)  # --noval epochs: no fitness, no count
        if main:
            row = {"epoch": epoch, **{f"train/{k}": v for k, v in mean_terms.items()},
                   **{f"metrics/{k}": v for k, v in metrics.items()}, **{f"lr/{part}": v for part, v in lrs.items()}}
            results_log.append_row(csv_path, row)
            board.scalars(row, epoch)
        if main and (not opt.nosave or final):
            state = _checkpoint(opt, save_dir, epoch, ema, model, optimizer, stopper.best_fitness, hyp,
                                compute_loss.balance, record, stale=stopper.stale)
            atomic_save(state, save_dir / "weights" / "last.pt")
            if best:
                atomic_save(state, save_dir / "weights" / "best.pt")
            if opt.save_period > 0 and epoch % opt.save_period == 0:  # stock's epoch{N}.pt, N counted from 0
                atomic_save(state, save_dir / "weights" / f"epoch{epoch}.pt")
        if distributed.broadcast_object(stopper.stop):  # rank 0's call: every process stops together
            print(f"stopping early: no improvement in {opt.patience} epochs (the best was epoch "
                  f"{epoch + 1 - stopper.stale})")
            break
    summary = {**metrics, "epochs": epoch + 1, "best_fitness": stopper.best_fitness, "save_dir": str(save_dir),
               "init": getattr(model, "init_note", "")}
    # best.pt is the epoch `stale` validated epochs back (every epoch validates unless --noval, whose only
    # validated epoch is the last); stock validates best.pt at the end of training, so say what it holds
    best_epoch = epoch - stopper.stale
    best_metrics = results_log.epoch_metrics(csv_path, best_epoch) if main and not opt.nosave else {}
    if best_epoch != epoch and best_metrics:
        summary["best"] = {"epoch": best_epoch + 1, **best_metrics}
    if main:
        (save_dir / "metrics.json").write_text(json.dumps(summary, indent=2))
    if plots:
        _plot_results(csv_path)
        board.image(save_dir / "results.png", epoch)
    board.close()
    print(f"done: {summary_line(metrics)}; weights in {save_dir / 'weights'}")
    if "best" in summary:
        print(f"best.pt is epoch {best_epoch + 1} of {epoch + 1} (best fitness: 0.1 mAP50 + 0.9 mAP50-95, the mean "
              f"over tasks): {summary_line(best_metrics)}")
    return summary


# --- pieces ---------------------------------------------------------------------------------------------------


def _seed_everything(seed: int, device: torch.device) -> None:
    """Seeds every generator; on CUDA also asks for deterministic kernels, as stock's ``init_seeds`` does (the
    target assignment writes overlapping cells, which CUDA would otherwise resolve in any order). On CPUs the
    kernels used are deterministic already, so nothing is changed there."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # read when cuBLAS starts
        torch.use_deterministic_algorithms(True, warn_only=True)  # warn, not fail, where an op has no such kernel
        torch.backends.cudnn.deterministic = True


def _build(opt: TrainOptions, data, ckpt: dict | None, contract: dict | None = None) -> nn.Module:
    """The model: from the resumed checkpoint, else --cfg with the data's classes (and FeatureInputs fitted to the
    feature ``contract``) plus --weights' matching tensors."""
    if ckpt:
        model = build_model(ckpt["config"])
        model.load_state_dict(ckpt["train_state"]["model"])
        return model
    model = build_model(opt.cfg, nc=data.nc, kpt_shape=data.kpt_shape, features=contract)
    if data.flip_idx and model.yaml.get("kpt_shape"):  # kept with the weights: --augment's mirror swaps these pairs
        model.yaml["flip_idx"] = [int(i) for i in data.flip_idx]
    skeleton = data.raw.get("skeleton")
    if model.yaml.get("kpt_shape") and not model.yaml.get("skeleton") and _pairs_within(skeleton, model.yaml["kpt_shape"][0]):
        model.yaml["skeleton"] = [[int(a), int(b)] for a, b in skeleton]  # detect.py joins these keypoints
    if opt.weights:
        weights = read_weights(opt.weights)
        names = (weights.names, data.names) if opt.class_transfer else (None, None)
        n = transfer_weights(model, weights.state, source_config=weights.config, source_names=names[0],
                             target_names=names[1])
        off = "" if opt.class_transfer else ", class matching off (--no-class-transfer)"
        model.init_note = describe_transfer(n, Path(opt.weights).name) + off  # compare.py's `init` column
        print(f"transferred {model.init_note}; the rest start fresh")
        if opt.class_transfer and n["partial"] and not n["classes"]:
            print(f"no class name of {data.source} is among the {len(weights.names)} of {opt.weights}: "
                  "Detect's class rows start fresh")
    return model


def _stitch_init(model, opt: TrainOptions, labels, cache, extractor, imgsz: int, device) -> None:
    """Fit the adapters by least squares so the --weights image model's neck sees what its backbone gave it."""
    if not opt.weights:
        raise FlagError("--stitch-init fits the adapters to the backbone of --weights: give the image model's weights")
    source = load_model(opt.weights, device=device)
    _, backbone_map = layer_correspondence(model.yaml, source.yaml)
    labels = labels[: opt.stitch_init]
    images = DataLoader(MultiTaskDataset(labels, imgsz, augment=False, use_masks=False), batch_size=8, collate_fn=collate)
    cached = FeatureDataset(labels, cache, use_masks=False) if cache is not None else None

    def pairs():
        for j, batch in enumerate(images):
            x = batch["img"].to(device).float() / 255
            if cached is not None:
                maps = collate([cached[k] for k in range(j * 8, j * 8 + len(x))])["features"]
                yield x, {k: v.to(device).float() for k, v in maps.items()}
            else:
                yield x, extractor(x)

    scores = fit_adapters(model, source, pairs(), backbone_map)
    fits = ", ".join(f"layer {t} (for layer {backbone_map[t]}) R2 {scores[t]:.3f}" for t in sorted(scores))
    print(f"stitch initialisation on {len(labels)} images, adapters fitted to {opt.weights}'s backbone: {fits}")


def _optimizer(model: nn.Module, name: str, lr: float, momentum: float, decay: float,
               balance: nn.Module | None = None) -> torch.optim.Optimizer:
    """Stock's three kinds of group (biases, decayed weights, norms), per model part (see stages.py), and the
    loss balancer's learned task weights in a group of their own, without weight decay."""
    groups = [{**g, "weight_decay": decay if g["kind"] == "weight" else 0.0, "lr_scale": 1.0, "initial_lr": lr}
              for g in param_groups(model)]
    extra = [p for p in (balance.parameters() if balance is not None else []) if p.requires_grad]
    if extra:
        groups.append({"params": extra, "part": "balance", "kind": "balance", "weight_decay": 0.0, "lr_scale": 1.0,
                       "initial_lr": lr})
    if name == "SGD":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=True)
    if name in ("Adam", "AdamW"):
        return getattr(torch.optim, name)(groups, lr=lr, betas=(momentum, 0.999))
    raise FlagError(f"--optimizer {name}: choose SGD, Adam or AdamW")


def _pairs_within(pairs: Any, k: int) -> bool:
    """Whether ``pairs`` is a list of [a, b] keypoint indices in 0..k-1 (a data file's ``skeleton``)."""
    return isinstance(pairs, list) and bool(pairs) and all(
        isinstance(p, (list, tuple)) and len(p) == 2 and all(isinstance(i, int) and 0 <= i < k for i in p) for p in pairs)


def rect_hyp(hyp: dict[str, Any]) -> dict[str, Any]:
    """Augmentation for ``--rect``: stock draws mosaic (and mixup and copy-paste inside it) only without rect."""
    return {**hyp, "mosaic": 0.0, "mixup": 0.0, "copy_paste": 0.0}


def _one_cycle(y1: float, y2: float, steps: int):
    return lambda x: ((1 - math.cos(x * math.pi / steps)) / 2) * (y2 - y1) + y1


def _warmup(optimizer, ni: int, warmup_iters: int, epoch: int, lf, hyp: dict, batch_size: int) -> int:
    """Linear warmup of LR (bias group from warmup_bias_lr) and momentum; returns the accumulation steps."""
    xi = [0, warmup_iters]
    for g in optimizer.param_groups:
        start = hyp["warmup_bias_lr"] if g["kind"] == "bias" else 0.0
        g["lr"] = float(np.interp(ni, xi, [start * g["lr_scale"], g["initial_lr"] * lf(epoch) * g["lr_scale"]]))
        if "momentum" in g:
            g["momentum"] = float(np.interp(ni, xi, [hyp["warmup_momentum"], hyp["momentum"]]))
    return max(1, int(np.interp(ni, xi, [1, hyp.get("nbs", NBS) / batch_size]).round()))


def _checkpoint(opt, save_dir, epoch, ema, model, optimizer, best_fitness, hyp, balance, features,
                stale: int = 0) -> dict[str, Any]:
    """Tensors and plain types only (``torch.load(weights_only=True)``); ``model`` holds the EMA weights;
    ``features`` says where a FeatureInput model's maps come from (val.py and detect.py read it); ``stale``:
    epochs since the best, the early-stopping count (``--resume`` goes on from it)."""
    extra = {"features": features} if features else {}
    if plugins.LOADED:  # names only: loading the checkpoint asks for them, never imports them
        extra["plugins"] = list(plugins.LOADED)
    return checkpoint_dict(model, ema.ema.state_dict(), epoch=epoch, hyp=hyp, opt=asdict(opt), save_dir=str(save_dir),
                           **extra,
                           date=datetime.now().isoformat(),
                           train_state={"model": plain_state(model.state_dict()), "optimizer": optimizer.state_dict(),
                                        "ema_updates": ema.updates, "best_fitness": best_fitness, "stale": stale,
                                        "balance": plain_state(balance.state_dict())})


def _resume_state(opt: TrainOptions) -> tuple[dict, TrainOptions]:
    path = Path(opt.resume)
    if opt.resume == "last":
        found = sorted(Path(opt.project).glob("*/weights/last.pt"), key=lambda p: p.stat().st_mtime)
        if not found:
            raise FileNotFoundError(f"--resume: no {opt.project}/*/weights/last.pt to resume")
        path = found[-1]
    folder = run_folder(path)  # the run goes on here, wherever the checkpoint says it was written
    ckpt = read_training_checkpoint(path)  # the one checkpoint reader
    resumed = TrainOptions(**resume_options(ckpt.get("opt"), opt, path))  # checked; code only if named again
    if ckpt["epoch"] + 1 >= resumed.epochs:
        raise FlagError(f"--resume {path}: that run already finished its {resumed.epochs} epochs")
    print(f"resuming {path} from epoch {ckpt['epoch'] + 2}/{resumed.epochs} into {folder}")
    return ckpt, resumed


def _plot_results(path: Path) -> None:
    """results.png: one panel per results.csv column (matplotlib, no fonts downloaded)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    header, rows = results_log.read_rows(path)
    if not rows:
        return
    keys = [k for k in header if k != "epoch"]
    cols = min(5, len(keys))
    fig, axes = plt.subplots(math.ceil(len(keys) / cols), cols, figsize=(3 * cols, 2.5 * math.ceil(len(keys) / cols)))
    epochs = [int(r["epoch"]) for r in rows]
    for ax, k in zip(np.ravel(axes), keys):
        ax.plot(epochs, [float(r[k]) if r.get(k) else float("nan") for r in rows], marker=".")
        ax.set_title(k, fontsize=8)
    fig.tight_layout()
    fig.savefig(path.with_name("results.png"), dpi=100)
    plt.close(fig)
