"""Multi-task cost and accuracy: det+seg+kpt on one backbone vs det-only, and vs three single-task models.

    python benchmarks/multitask.py                 # cost only: a few minutes on a 2-core CPU
    python benchmarks/multitask.py --epochs 11     # plus accuracy: trains 4 models with the main job's recipe (~35 min)

Cost: per-image training step (forward + loss + backward, no optimizer step) and inference as detect.py
does it (forward, one NMS at conf 0.25 carrying masks and keypoints, the kept boxes' masks) on the same batches
of the built-in shapes data, timed after warm-up (passes of all models interleaved, the fastest of each kept); untrained models keep few boxes, so the cost of assembling
masks is also printed on its own, per 20 detections. References measured in the same run: the det-only model (ratio targets:
training <= 1.3x, inference <= 1.2x) and the sum of three single-task models (det, seg, pose; each seg/pose
model carries the detector its branch shares, as in YOLOv5-seg and YOLO-Pose). Also the seg model's mask loss,
computed on windows around the boxes (ours) and on whole maps (YOLOv5-seg's way), on the same batches.
Accuracy (with --epochs): each of yolov5n, -seg, -pose, -multitask trained from scratch with the same
recipe and validated; box mAP of the multi-task model vs det-only (target: within 1 point).
``--json PATH`` also writes the cost figures for ``run_all.py``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from _common import Figure, use_this_checkout, write_json

use_this_checkout()  # measure this checkout's yolostitch

from yolostitch import build_model  # noqa: E402
from yolostitch.data.config import load_data_config  # noqa: E402
from yolostitch.data.dataset import MultiTaskDataset, collate  # noqa: E402
from yolostitch.data.scan import scan_split  # noqa: E402
from yolostitch.engine.predict import assemble_masks, postprocess  # noqa: E402
from yolostitch.tasks import tasks_of  # noqa: E402
from yolostitch.engine.trainer import TrainOptions, load_hyp, train  # noqa: E402
from yolostitch.losses import ComputeLoss  # noqa: E402

MODELS = {"det": "yolov5n.yaml", "seg": "yolov5n-seg.yaml", "pose": "yolov5n-pose.yaml",
          "multitask": "yolov5n-multitask.yaml"}


def batches(data, imgsz: int, batch_size: int, n: int) -> list[dict]:
    scan = scan_split(data.splits["train"], data.nc, data.kpt_shape)
    dataset = MultiTaskDataset(scan.labels, imgsz, augment=True, hyp=load_hyp("hyp.scratch-low.yaml"),
                               kpt_shape=data.kpt_shape, flip_idx=data.flip_idx, use_masks=True)
    torch.manual_seed(0)
    order = torch.randperm(len(dataset)).tolist()
    return [collate([dataset[i] for i in order[b * batch_size:(b + 1) * batch_size]]) for b in range(n)]


class Runner:
    """One model's timed passes over the shared batches; passes of all models are interleaved and the fastest
    of each kept, so a slow spell of the machine does not land on one model only."""

    def __init__(self, cfg: str, data, samples: list[dict], imgsz: int):
        torch.manual_seed(0)
        self.model = build_model(cfg, nc=data.nc, kpt_shape=data.kpt_shape)
        self.loss = ComputeLoss(self.model, load_hyp("hyp.scratch-low.yaml"), imgsz)
        self.samples, self.images = samples, [b["img"].float() / 255 for b in samples]
        self.n_images = sum(len(x) for x in self.images)
        self.train_s, self.infer_s = float("inf"), float("inf")

    def train_pass(self) -> None:
        self.model.train()
        start = time.perf_counter()
        for x, b in zip(self.images, self.samples):
            self.model.zero_grad(set_to_none=True)
            total, _ = self.loss(self.model(x), b)
            total.backward()
        self.train_s = min(self.train_s, (time.perf_counter() - start) / self.n_images)

    def infer_pass(self) -> None:  # as detect.py: forward, one NMS at conf 0.25, the kept boxes' masks
        self.model.eval()
        start = time.perf_counter()
        with torch.no_grad():
            for x in self.images:
                for det in postprocess(self.model(x), 0.25, 0.45, nc=self.model.nc, max_det=300,
                                       tasks=tasks_of(self.model)):
                    det.masks(x.shape[2:])
        self.infer_s = min(self.infer_s, (time.perf_counter() - start) / self.n_images)


def step_costs(data, samples: list[dict], imgsz: int, repeats: int) -> dict[str, tuple[float, float]]:
    """Seconds per image per model: (training step, inference), fastest of ``repeats`` interleaved passes."""
    runners = {name: Runner(cfg, data, samples, imgsz) for name, cfg in MODELS.items()}
    for r in runners.values():  # warm-up
        r.train_pass()
        r.infer_pass()
    for _ in range(repeats):
        for r in runners.values():
            r.train_pass()
            r.infer_pass()
    return {name: (r.train_s, r.infer_s) for name, r in runners.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="shapes-hard.yaml")
    p.add_argument("--imgsz", type=int, default=320)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--batches", type=int, default=4, help="distinct batches timed per pass")
    p.add_argument("--repeats", type=int, default=3, help="timed passes over those batches (fastest kept)")
    p.add_argument("--epochs", type=int, default=0, help="also train each model this long and compare mAP")
    p.add_argument("--hyp", default="hyp.shapes.yaml")
    p.add_argument("--optimizer", default="AdamW")
    p.add_argument("--train-only", nargs="+", default=list(MODELS), choices=list(MODELS),
                   help="with --epochs: which models to train (e.g. all but one already trained)")
    p.add_argument("--skip-cost", action="store_true", help="only the accuracy part")
    p.add_argument("--project", default="runs/benchmarks/multitask")
    p.add_argument("--out", type=Path, help="also write the tables (markdown) here")
    p.add_argument("--json", type=Path, help="also write the cost figures here for run_all.py")
    args = p.parse_args()
    data = load_data_config(args.data)
    lines: list[str] = []
    if not args.skip_cost:
        lines, cost = cost_table(data, args)
        write_json(args.json, "multitask", cost_figures(cost),
                   [f"yolov5n, imgsz {args.imgsz}, batch {args.batch_size}, {args.batches} batches, fastest of "
                    f"{args.repeats} passes, {torch.get_num_threads()} threads"], cost_s_per_image=cost)
    if args.epochs:
        lines += accuracy_table(args)
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")


def cost_figures(cost: dict[str, tuple[float, float]]) -> list[Figure]:
    """Multi-task against det-only (the targets) and against the three single-task models it replaces."""
    (tr, inf), (det_tr, det_inf) = cost["multitask"], cost["det"]
    singles = [sum(cost[k][i] for k in ("det", "seg", "pose")) for i in (0, 1)]
    ms = 1e3
    return [Figure("multi-task training step (vs det-only)", tr * ms, det_tr * ms, "ms/image", "det-only",
                   at_most=1.3),
            Figure("multi-task inference (vs det-only)", inf * ms, det_inf * ms, "ms/image", "det-only", at_most=1.2),
            Figure("multi-task training step (vs 3 single-task models)", tr * ms, singles[0] * ms, "ms/image",
                   "det + seg + pose"),
            Figure("multi-task inference (vs 3 single-task models)", inf * ms, singles[1] * ms, "ms/image",
                   "det + seg + pose")]


def cost_table(data, args) -> tuple[list[str], dict[str, tuple[float, float]]]:
    samples = batches(data, args.imgsz, args.batch_size, args.batches)
    print(f"cost per image, yolov5n, imgsz {args.imgsz}, batch {args.batch_size}, {torch.get_num_threads()} threads")
    cost = step_costs(data, samples, args.imgsz, args.repeats)
    det_train, det_infer = cost["det"]
    singles_train = sum(cost[k][0] for k in ("det", "seg", "pose"))
    singles_infer = sum(cost[k][1] for k in ("det", "seg", "pose"))
    lines = ["| model | train ms/img | vs det-only | infer ms/img | vs det-only |", "|---|---|---|---|---|"]
    for name, (tr, inf) in cost.items():
        lines.append(f"| {name} | {tr * 1e3:.1f} | {tr / det_train:.2f}x | {inf * 1e3:.1f} | {inf / det_infer:.2f}x |")
    lines.append(f"| det + seg + pose (3 models) | {singles_train * 1e3:.1f} | {singles_train / det_train:.2f}x | "
                 f"{singles_infer * 1e3:.1f} | {singles_infer / det_infer:.2f}x |")
    protos, coefficients = torch.randn(32, args.imgsz // 4, args.imgsz // 4), torch.randn(20, 32)
    boxes = torch.tensor([[0.0, 0.0, args.imgsz / 4, args.imgsz / 4]]).repeat(20, 1)
    start = time.perf_counter()
    for _ in range(20):
        assemble_masks(protos, coefficients, boxes, (args.imgsz, args.imgsz))
    mask_ms = (time.perf_counter() - start) / 20 * 1e3
    lines.append(f"\nassembling 20 masks at {args.imgsz}x{args.imgsz}: {mask_ms:.1f} ms per image "
                 f"({mask_ms / (det_infer * 1e3):.2f}x the det-only inference)")
    windowed, whole, diff = mask_loss_cost(data, samples, args.imgsz, args.repeats)
    lines.append(f"mask loss, forward + backward: {windowed * 1e3:.1f} ms per image on windows around the boxes, "
                 f"{whole * 1e3:.1f} ms on whole maps (YOLOv5-seg's way; {windowed / whole:.2f}x), values and "
                 f"gradients within {diff:.1e} of each other")
    tr, inf = cost["multitask"]
    lines.append(f"\nmulti-task vs det-only: training {tr / det_train:.2f}x (target <= 1.3x), inference "
                 f"{inf / det_infer:.2f}x (target <= 1.2x); vs three single-task models: training "
                 f"{tr / singles_train:.2f}x, inference {inf / singles_infer:.2f}x")
    print("\n".join(lines), flush=True)
    return lines, cost


def mask_loss_cost(data, samples: list[dict], imgsz: int, repeats: int) -> tuple[float, float, float]:
    """Seconds per image of the seg model's mask term (forward + backward) on these batches, as yolostitch computes
    it (a window around each box) and on whole maps (every instance through the whole-map path, as YOLOv5-seg),
    and the largest relative difference of their values and gradients."""
    from yolostitch.losses import segment
    from yolostitch.tasks import masks as mask_task

    torch.manual_seed(0)
    model = build_model(MODELS["seg"], nc=data.nc).train()
    loss = ComputeLoss(model, load_hyp("hyp.scratch-low.yaml"), imgsz)
    calls = []
    real = mask_task.mask_term
    mask_task.mask_term = lambda *a: calls.append(a) or real(*a)  # the inputs of each batch's term
    try:
        for sample in samples:
            loss(model(sample["img"].float() / 255), sample)
    finally:
        mask_task.mask_term = real
    inputs = [([p.detach() for p in maps], protos.detach(), *rest) for maps, protos, *rest in calls]
    n = sum(len(s["img"]) for s in samples)

    def timed(share: float) -> tuple[float, list[torch.Tensor]]:
        segment.DENSE_SHARE, best, outputs = share, float("inf"), []
        for _ in range(repeats):
            start, outputs = time.perf_counter(), []
            for maps, protos, *rest in inputs:
                maps = [p.clone().requires_grad_(True) for p in maps]
                protos = protos.clone().requires_grad_(True)
                value = real(maps, protos, *rest)
                value.backward()
                outputs += [value.detach(), protos.grad, *(p.grad for p in maps)]
            best = min(best, time.perf_counter() - start)
        return best / n, outputs

    share = segment.DENSE_SHARE
    try:
        windowed, ours = timed(share)
        whole, reference = timed(0.0)  # every window "covers enough of the map": all whole-map
    finally:
        segment.DENSE_SHARE = share
    diff = max(float((a - b).abs().max() / b.abs().max().clamp(min=1e-12)) for a, b in zip(ours, reference))
    return windowed, whole, diff


def accuracy_table(args) -> list[str]:
    """Train each model with one recipe (validation at the end only) and tabulate its mAP."""
    lines = ["", f"accuracy after {args.epochs} epochs ({args.hyp}, imgsz {args.imgsz}, batch {args.batch_size})",
              "| model | box mAP50 | box mAP50-95 | mask mAP50-95 | pose mAP50-95 | train time |",
              "|---|---|---|---|---|---|"]
    results = {}
    for name in args.train_only:
        start = time.perf_counter()
        r = train(TrainOptions(cfg=MODELS[name], data=args.data, hyp=args.hyp, epochs=args.epochs,
                               imgsz=args.imgsz, batch_size=args.batch_size, workers=2, project=args.project,
                               name=name, noval=True, optimizer=args.optimizer, exist_ok=True))
        results[name] = {**r, "seconds": time.perf_counter() - start}
        lines.append(f"| {name} | {r['box_map50']:.3f} | {r['box_map']:.3f} | {r.get('mask_map', float('nan')):.3f} | "
                     f"{r.get('pose_map', float('nan')):.3f} | {results[name]['seconds'] / 60:.1f} min |")
        print(lines[-1], flush=True)
    if {"det", "multitask"} <= set(results):
        gap = (results["multitask"]["box_map"] - results["det"]["box_map"]) * 100
        lines.append(f"\nmulti-task box mAP50-95 minus det-only: {gap:+.1f} points (target: within 1 point)")
        print(lines[-1])
    Path(args.project).mkdir(parents=True, exist_ok=True)
    (Path(args.project) / "results.json").write_text(json.dumps(results, indent=2, default=str))
    return lines


if __name__ == "__main__":
    main()
