"""A dataset as stock YOLOv5 detection reads it: our label lines may carry keypoints and polygons after the
box (multi-task), which stock would misread as polygons, so the box part is written out on its own."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import yaml

from ..data.config import load_data_config
from ..data.scan import scan_split


def export_detection(data: str | Path, dest: Path, limits: dict[str, int | None] | None = None
                     ) -> tuple[Path, dict[str, dict[str, int]]]:
    """Write ``dest/data.yaml`` with ``images/{train,val}`` (links to the original images, copies where links
    are refused) and box-only labels ``cls cx cy w h``; return it and each split's image and instance counts.
    Images the scan rejects (corrupt, bad labels) are left out and reported. ``limits`` caps a split's images
    (first N by file name)."""
    cfg = load_data_config(data)  # generates the built-in shapes data on first use
    limits = limits or {}
    counts = {}
    for split in ("train", "val"):
        if split not in cfg.splits:
            continue
        scan = scan_split(cfg.splits[split], cfg.nc, cfg.kpt_shape)
        for problem in scan.problems:
            print(f"  {split}: skipped {problem.file}: {problem.reason}")
        labels = sorted(scan.labels, key=lambda lab: lab.im_file)[:limits.get(split)]
        images, label_dir = dest / "images" / split, dest / "labels" / split
        shutil.rmtree(images, ignore_errors=True)
        shutil.rmtree(label_dir, ignore_errors=True)
        images.mkdir(parents=True)
        label_dir.mkdir(parents=True)
        for lab in labels:
            src = Path(lab.im_file).resolve()
            if (images / src.name).exists():
                raise ValueError(f"{cfg.source}: two {split} images named {src.name}; stock pairs labels by name")
            _link_or_copy(src, images / src.name)
            lines = [f"{int(c)} {x:.6f} {y:.6f} {w:.6f} {h:.6f}\n" for c, (x, y, w, h) in zip(lab.cls, lab.bboxes)]
            (label_dir / src.with_suffix(".txt").name).write_text("".join(lines))
        counts[split] = {"images": len(labels), "instances": int(sum(len(lab) for lab in labels))}
    spec: dict[str, Any] = {"path": str(dest.resolve()), "train": "images/train",
                            "val": "images/val" if "val" in counts else "images/train",
                            "nc": cfg.nc, "names": dict(cfg.names)}
    data_yaml = dest / "data.yaml"
    data_yaml.write_text(yaml.safe_dump(spec, sort_keys=False))
    return data_yaml, counts


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.symlink(src, dst)
    except OSError:  # file systems without symlinks
        shutil.copyfile(src, dst)
