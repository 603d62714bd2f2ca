"""Per-keypoint gradient of the training loss at initialisation, against the keypoint's distance from its anchor
cell, on real people: why keypoints far from the cell do not learn with the OKS term alone.

    python benchmarks/pose_gradients.py                       # kdist gain 0 (OKS only) and the hyp's default
    python benchmarks/pose_gradients.py --gains 0 0.05 0.2    # any kdist gains

The model is ``--cfg`` (default ``yolov5n-multitask.yaml``) with the detection weights of ``--weights``
transferred as ``train.py --weights`` does (the keypoint convs start fresh, seeded), in training mode. The batch is
every train image of the ``pose_split.py`` split that has a labelled keypoint, letterboxed to ``--imgsz`` without
augmentation. For every (assignment, labelled keypoint) the script takes |dL/dpred| = the norm of the gradient
of the total training loss (hyp gains, batch-size scaling) with respect to the keypoint's predicted x, y in grid
units, and groups it by the target's distance from the anchor cell in cells.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch
from _common import use_this_checkout
from pose_split import DEFAULT_SRC, write_split

use_this_checkout()

from yolostitch import build_model  # noqa: E402
from yolostitch.data.config import load_data_config  # noqa: E402
from yolostitch.data.dataset import MultiTaskDataset, collate  # noqa: E402
from yolostitch.data.scan import scan_split  # noqa: E402
from yolostitch.engine.trainer import load_hyp  # noqa: E402
from yolostitch.losses import ComputeLoss, assign_targets  # noqa: E402
from yolostitch.losses.compute import targets_from_batch  # noqa: E402
from yolostitch.weights import read_weights, transfer_weights  # noqa: E402

BINS = (0, 1, 2, 4, 8, 16, math.inf)  # distance from the anchor cell's centre, cells
DEAD_E = 10.0  # OKS exponent beyond which the OKS term's gradient has vanished (exp(-10) = 4.5e-5)
COCO_NAMES = ["nose", "l_eye", "r_eye", "l_ear", "r_ear", "l_shoulder", "r_shoulder", "l_elbow", "r_elbow",
              "l_wrist", "r_wrist", "l_hip", "r_hip", "l_knee", "r_knee", "l_ankle", "r_ankle"]


def real_batch(data_yaml: Path, imgsz: int) -> dict:
    """Every train image with at least one labelled keypoint, letterboxed, no augmentation."""
    data = load_data_config(data_yaml)
    labels = [lab for lab in scan_split(data.splits["train"], data.nc, data.kpt_shape).labels
              if lab.keypoints is not None and len(lab.keypoints) and (lab.keypoints[..., 2] > 0).any()]
    dataset = MultiTaskDataset(labels, imgsz, augment=False, kpt_shape=data.kpt_shape, use_masks=True)
    return collate([dataset[i] for i in range(len(dataset))])


def per_keypoint_gradients(model, hyp: dict, batch: dict, imgsz: int) -> dict[str, np.ndarray]:
    """Per labelled keypoint of every assignment: ``dist`` (target from the anchor cell's centre, cells), ``error``
    (prediction from target, cells), ``e`` (OKS exponent: the keypoint's OKS is exp(-e)), ``grad`` (|dL/dpred|
    per cell, L the total training loss with ``hyp``'s gains) and ``index`` (which keypoint)."""
    loss = ComputeLoss(model, hyp, imgsz)
    model.zero_grad()
    outputs = model(batch["img"].float() / 255)
    for p in outputs["kpt"]:
        p.retain_grad()
    total, _ = loss(outputs, batch)
    total.backward()
    head = loss.head
    targets = targets_from_batch(batch)
    assignments = assign_targets(targets, head, [p.shape[2:4] for p in outputs["kpt"]], hyp["anchor_t"])
    keypoints = batch["keypoints"].float()
    k = keypoints.shape[1]
    out: dict[str, list] = {"dist": [], "error": [], "e": [], "grad": [], "index": []}
    sigmas = loss.sigmas
    for p, a in zip(outputs["kpt"], assignments):
        ny, nx = p.shape[2:4]
        raw = p.detach()[a.batch, a.anchor, a.gj, a.gi].view(len(a), k, -1)
        g = p.grad[a.batch, a.anchor, a.gj, a.gi].view(len(a), k, -1)[..., :2] / 2  # d pred = 2 d raw
        cell = torch.stack((a.gi, a.gj), 1).float().unsqueeze(1)
        true_xy = keypoints[a.instance, :, :2] * torch.tensor([nx, ny])
        pred_xy = raw[..., :2] * 2 - 0.5 + cell
        labelled = keypoints[a.instance, :, 2] > 0
        d2 = (pred_xy - true_xy).pow(2).sum(-1)
        e = d2 / ((2 * sigmas) ** 2 * a.box[:, 2:4].prod(1, keepdim=True) * 2)
        out["dist"].append((true_xy - cell - 0.5).norm(dim=-1)[labelled])
        out["error"].append(d2.sqrt()[labelled])
        out["e"].append(e[labelled])
        out["grad"].append(g.norm(dim=-1)[labelled])
        out["index"].append(torch.arange(k).expand(len(a), k)[labelled])
    return {name: torch.cat(v).numpy() for name, v in out.items()}


def report(r: dict[str, np.ndarray], label: str, names: list[str] | None = None) -> None:
    """The table by distance from the cell; per keypoint when ``names`` are given."""
    print(f"\n{label}: {len(r['dist'])} (assignment, labelled keypoint) pairs; e > {DEAD_E:g} means exp(-e), the "
          f"OKS term's slope factor, is below {math.exp(-DEAD_E):.0e}")
    head = f"{'median error':>12} {'median e':>9} {'e > ' + format(DEAD_E, 'g'):>7} {'median |dL/dpred|':>18} {'10th pct':>9}"
    print(f"{'from cell':>10} {'pairs':>6} " + head)

    def row(sel: np.ndarray) -> str:
        g = r["grad"][sel]
        return (f"{np.median(r['error'][sel]):>12.1f} {np.median(r['e'][sel]):>9.1f} {(r['e'][sel] > DEAD_E).mean():>7.0%} "
                f"{np.median(g):>18.2e} {np.percentile(g, 10):>9.2e}")

    for lo, hi in zip(BINS[:-1], BINS[1:]):
        sel = (r["dist"] >= lo) & (r["dist"] < hi)
        if sel.any():
            print(f"{f'{lo}-{hi}':>10} {sel.sum():>6} " + row(sel))
    if names:
        print(f"{'keypoint':>10} {'cells':>6} " + head)
        for j, name in enumerate(names):
            sel = r["index"] == j
            if sel.any():
                print(f"{name:>10} {np.median(r['dist'][sel]):>6.1f} " + row(sel))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cfg", default="yolov5n-multitask.yaml")
    p.add_argument("--weights", default=str(Path(DEFAULT_SRC).parents[1] / "weights" / "yolov5n.pt"))
    p.add_argument("--src", type=Path, default=DEFAULT_SRC, help="the coco-persons folder")
    p.add_argument("--split-dir", type=Path, default=Path("/tmp/coco-persons-split"))
    p.add_argument("--hyp", default="hyp.scratch-low.yaml")
    p.add_argument("--imgsz", type=int, default=416)
    p.add_argument("--gains", type=float, nargs="*", default=None,
                   help="kdist gains to compare (default: 0, i.e. OKS only, and the hyp's value)")
    args = p.parse_args()
    data_yaml = write_split(args.src, args.split_dir)
    hyp = load_hyp(args.hyp)
    gains = args.gains if args.gains is not None else sorted({0.0, float(hyp.get("kdist", 0.0))})
    batch = real_batch(data_yaml, args.imgsz)
    data = load_data_config(data_yaml)
    torch.manual_seed(0)
    model = build_model(args.cfg, nc=data.nc, kpt_shape=data.kpt_shape)
    weights = read_weights(args.weights)
    transfer_weights(model, weights.state, source_config=weights.config)
    model.train()
    print(f"{args.cfg} from {args.weights}, {len(batch['img'])} real images with keypoints at {args.imgsz}, "
          f"{int((batch['keypoints'][..., 2] > 0).any(1).sum())} persons with keypoints")
    names = COCO_NAMES if data.kpt_shape[0] == len(COCO_NAMES) else None
    for gain in gains:
        r = per_keypoint_gradients(model, {**hyp, "kdist": gain}, batch, args.imgsz)
        report(r, f"kdist {gain:g}", names)


if __name__ == "__main__":
    main()
