"""A dataset as stock YOLOv5 reads it. Our label lines may carry keypoints and polygons after the box
(multi-task), which stock would misread, so each task gets its own export: boxes only for stock detection,
polygons only for stock YOLOv5-seg (which takes an instance's box from its polygon's extent)."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any, Callable

import yaml

from ..data.config import load_data_config
from ..errors import DataError
from ..data.labels import ImageLabels
from ..data.scan import scan_split

LOGGER = logging.getLogger(__name__)


def export_detection(data: str | Path, dest: Path, limits: dict[str, int | None] | None = None
                     ) -> tuple[Path, dict[str, dict[str, int]]]:
    """Write ``dest/data.yaml`` with ``images/{train,val}`` (links to the original images, copies where links
    are refused) and box-only labels ``cls cx cy w h``; return it and each split's image and instance counts.
    Images the scan rejects (corrupt, bad labels) are left out and reported. ``limits`` caps a split's images
    (first N by file name)."""
    return _export(data, dest, _box_lines, limits)


def export_segmentation(data: str | Path, dest: Path, limits: dict[str, int | None] | None = None
                        ) -> tuple[Path, dict[str, dict[str, int]]]:
    """As :func:`export_detection`, with stock YOLOv5-seg's polygon lines ``cls x1 y1 x2 y2 ...`` (normalised).

    Stock-seg has no instance without a mask: it derives the box from the polygon. Instances we hold without a
    polygon (box- or keypoint-only labels; our validator ignores them for mask mAP) are therefore left out,
    logged and counted per split as ``without_polygon``; an image left with no instance stays as a background."""
    return _export(data, dest, _polygon_lines, limits)


def _box_lines(lab: ImageLabels) -> list[str]:
    return [f"{int(c)} {x:.6f} {y:.6f} {w:.6f} {h:.6f}\n" for c, (x, y, w, h) in zip(lab.cls, lab.bboxes)]


def _polygon_lines(lab: ImageLabels) -> list[str]:
    return [f"{int(c)} " + " ".join(f"{v:.6f}" for v in polygon.reshape(-1)) + "\n"
            for c, polygon, has_mask in zip(lab.cls, lab.segments, lab.has_mask) if has_mask]


def _export(data: str | Path, dest: Path, to_lines: Callable[[ImageLabels], list[str]],
            limits: dict[str, int | None] | None) -> tuple[Path, dict[str, dict[str, int]]]:
    cfg = load_data_config(data)  # generates the built-in shapes data on first use
    limits = limits or {}
    counts = {}
    for split in ("train", "val"):
        if split not in cfg.splits:
            continue
        scan = scan_split(cfg.splits[split], cfg.nc, cfg.kpt_shape)
        for problem in scan.problems:
            LOGGER.info("  %s: skipped %s: %s", split, problem.file, problem.reason)
        labels = sorted(scan.labels, key=lambda lab: lab.im_file)[:limits.get(split)]
        images, label_dir = dest / "images" / split, dest / "labels" / split
        shutil.rmtree(images, ignore_errors=True)
        shutil.rmtree(label_dir, ignore_errors=True)
        images.mkdir(parents=True)
        label_dir.mkdir(parents=True)
        written = 0
        for lab in labels:
            src = Path(lab.im_file).resolve()
            if (images / src.name).exists():
                raise DataError(f"{cfg.source}: two {split} images named {src.name}; stock pairs labels by name")
            _link_or_copy(src, images / src.name)
            lines = to_lines(lab)
            written += len(lines)
            (label_dir / src.with_suffix(".txt").name).write_text("".join(lines))
        instances = int(sum(len(lab) for lab in labels))
        counts[split] = {"images": len(labels), "instances": written}
        if instances > written:
            counts[split]["without_polygon"] = instances - written
            LOGGER.warning("%s %s: %d of %d instances have no polygon; stock YOLOv5-seg gets the other %d",
                           cfg.source, split, instances - written, instances, written)
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
