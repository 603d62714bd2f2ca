"""The comparison table as Markdown (printed and compare.md), CSV and JSON (raw numbers), and a PNG of box
mAP50-95 against CPU latency."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any, Sequence

logger = logging.getLogger(__name__)

# (key, Markdown header, formatter); mask and pose columns appear only when some row has them
COLUMNS = (
    ("model", "model", str),
    ("source", "run", str),
    ("box_map50", "box mAP50", "{:.4f}".format),
    ("box_map", "box mAP50-95", "{:.4f}".format),
    ("mask_map", "mask mAP50-95", "{:.4f}".format),
    ("pose_map", "pose mAP50-95", "{:.4f}".format),
    ("parameters", "params (M)", lambda v: f"{v / 1e6:.2f}"),
    ("gflops", "GFLOPs", "{:.2f}".format),
    ("latency_ms", "CPU ms/img", "{:.1f}".format),
    ("train_s", "train time", lambda v: f"{v / 60:.1f} min"),
    ("init", "init", str),  # with --init: what each trained row took from the checkpoint
)
OPTIONAL = ("mask_map", "pose_map", "init")


def columns(rows: Sequence[dict[str, Any]]) -> list[tuple]:
    return [c for c in COLUMNS if c[0] not in OPTIONAL or any(r.get(c[0]) is not None for r in rows)]


def markdown(rows: Sequence[dict[str, Any]], recipe: str) -> str:
    cols = columns(rows)
    lines = ["| " + " | ".join(c[1] for c in cols) + " |",
             "|" + "|".join("---" if c[2] is str else "---:" for c in cols) + "|"]
    for r in rows:
        lines.append("| " + " | ".join("-" if r.get(k) is None else fmt(r[k]) for k, _, fmt in cols) + " |")
    notes = [f"Recipe: {recipe}."]
    notes += [f"{r['model']} ({r['source']}): latency {r['latency_note']}." for r in rows if r.get("latency_note")]
    if any(r["source"].startswith("stock") and r.get("mask_map") is None for r in rows):
        notes.append("Stock rows: the stock yolov5 package trained its own YAML on the same images and boxes "
                     "(box-only labels), validated by its own val.py code; train time includes its final "
                     "re-validation of best.pt. Latency: its own letterbox, fused forward and NMS.")
    if any(r["source"].startswith("stock") and r.get("mask_map") is not None for r in rows):
        notes.append("Stock -seg rows: the stock yolov5 package's segment/train.py trained its own models/segment "
                     "YAML on the same images and polygons (each box is its polygon's extent, as stock derives it), "
                     "validated by its own segment/val.py code (box and mask mAP). Latency: its segment/predict.py "
                     "--retina-masks path: letterbox, fused forward, NMS, masks at the image's resolution, as ours.")
    notes += [f"{r['model']} ({r['source']}): {r['data_note']}." for r in rows if r.get("data_note")]
    if any(r.get("detect_fresh") for r in rows):  # stock rows from a checkpoint with another class count
        notes.append("init: with another class count than the checkpoint's, stock's --weights leaves Detect's convs "
                     "fresh; ours keeps their box/objectness rows and the rows of the classes named in both (unless "
                     "--no-class-transfer), so ours can start ahead: read early epochs with that in mind.")
    return "\n".join(lines + [""] + notes) + "\n"


def write_csv(rows: Sequence[dict[str, Any]], path: Path) -> None:
    extra = [k for k in ("mask_map50", "pose_map50", "latency_note", "data_note", "weights")
             if any(r.get(k) for r in rows)]
    keys = [c[0] for c in columns(rows)] + extra
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        writer.writeheader()
        writer.writerows({k: ("" if r.get(k) is None else r[k]) for k in keys} for r in rows)


def plot(rows: Sequence[dict[str, Any]], path: Path) -> bool:
    """Box mAP50-95 vs CPU latency, one labelled point per row; False (and a message) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.info("compare.png not drawn: matplotlib is not installed (pip install matplotlib)")
        return False
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for r in rows:
        if r.get("latency_ms") is None or r.get("box_map") is None:
            continue
        stock = r["source"].startswith("stock")
        ax.scatter(r["latency_ms"], r["box_map"], marker="s" if stock else "o", s=40)
        ax.annotate(f"{r['model']}{' (stock)' if stock else ''}", (r["latency_ms"], r["box_map"]),
                    textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_xlabel("CPU latency per image (ms, batch 1)")
    ax.set_ylabel("box mAP50-95")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def write_report(rows: Sequence[dict[str, Any]], save_dir: Path, recipe: str) -> str:
    """compare.md, compare.csv, compare.json and compare.png in ``save_dir``; return the Markdown."""
    table = markdown(rows, recipe)
    (save_dir / "compare.md").write_text(table)
    write_csv(rows, save_dir / "compare.csv")
    (save_dir / "compare.json").write_text(json.dumps(list(rows), indent=2, default=str))
    plot(rows, save_dir / "compare.png")
    return table
