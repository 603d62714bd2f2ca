"""Keypoints on real people: fine-tune ``yolov5n-multitask.yaml`` from ``yolov5n.pt`` on coco-persons with the
default recipe, once per ``kdist`` gain, and print box, mask and pose mAP of each run.

    python benchmarks/pose_finetune.py                      # kdist 0 (OKS only) and the default: ~2 h each on 2 cores
    python benchmarks/pose_finetune.py --gains 0.3          # one run
    python benchmarks/pose_finetune.py --table-only         # the table of runs already in --project

Split: ``pose_split.py`` (file names sorted, first 64 train, last 16 val). Recipe: ``train.py --epochs 30 --imgsz
416 --batch-size 16 --workers 2`` with ``hyp.scratch-low.yaml`` (train.py's default) where only ``kdist`` is set per
run. Gain 0 is the OKS-only loss on today's code (the keypoint convs still start at the cell centres); the loss and
init before the change are measured by running this same command line on the earlier commit. Only 16 val images
(20 persons with keypoints): differences of a few points are noise.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import yaml
from _common import ROOT, markdown_table
from pose_split import DEFAULT_SRC, write_split

METRICS = [("box", "box_map50"), ("box", "box_map"), ("mask", "mask_map50"), ("mask", "mask_map"),
           ("pose", "pose_map50"), ("pose", "pose_map")]


def run_name(gain: float) -> str:
    return f"kdist{gain:g}"


def train(gain: float, data_yaml: Path, project: Path, args: argparse.Namespace) -> Path:
    """One fine-tune through train.py's command line; returns the run folder."""
    hyp = yaml.safe_load((ROOT / "data" / "hyps" / "hyp.scratch-low.yaml").read_text())
    project.mkdir(parents=True, exist_ok=True)
    hyp_path = project / f"hyp.{run_name(gain)}.yaml"
    hyp_path.write_text(yaml.safe_dump({**hyp, "kdist": gain}, sort_keys=False))
    command = [sys.executable, str(ROOT / "train.py"), "--cfg", "yolov5n-multitask.yaml", "--weights", str(args.weights),
               "--data", str(data_yaml), "--hyp", str(hyp_path), "--epochs", str(args.epochs), "--imgsz", str(args.imgsz),
               "--batch-size", "16", "--workers", "2", "--project", str(project), "--name", run_name(gain), "--exist-ok"]
    print(" ".join(command), flush=True)
    subprocess.run(command, check=True)
    return project / run_name(gain)


def table(project: Path, gains: list[float]) -> str:
    rows = []
    for gain in gains:
        path = project / run_name(gain) / "metrics.json"
        if not path.is_file():
            rows.append([f"kdist {gain:g}"] + ["not run"] * len(METRICS))
            continue
        m = json.loads(path.read_text())
        rows.append([f"kdist {gain:g}"] + [f"{m[key]:.3f}" if key in m else "—" for _, key in METRICS])
    head = ["loss"] + [f"{task} mAP50" if key.endswith("50") else f"{task} mAP50-95" for task, key in METRICS]
    return markdown_table(head, rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--gains", type=float, nargs="+", default=None, help="kdist gains (default: 0 and the hyp's)")
    p.add_argument("--weights", type=Path, default=DEFAULT_SRC.parents[1] / "weights" / "yolov5n.pt")
    p.add_argument("--src", type=Path, default=DEFAULT_SRC, help="the coco-persons folder (COCO layout)")
    p.add_argument("--split-dir", type=Path, default=Path("/tmp/coco-persons-split"))
    p.add_argument("--project", type=Path, default=Path("runs/pose-finetune"))
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--imgsz", type=int, default=416)
    p.add_argument("--table-only", action="store_true", help="print the table of the runs already done")
    args = p.parse_args()
    default = float(yaml.safe_load((ROOT / "data" / "hyps" / "hyp.scratch-low.yaml").read_text()).get("kdist", 0.0))
    gains = args.gains if args.gains is not None else sorted({0.0, default})
    if not args.table_only:
        data_yaml = write_split(args.src, args.split_dir)
        for gain in gains:
            train(gain, data_yaml, args.project, args)
    print(table(args.project, gains))


if __name__ == "__main__":
    main()
