"""The data doctor: scan every split of a dataset and report what training would use and skip."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TextIO

from .config import REQUIRED_SPLITS, DataConfig, load_data_config
from .scan import SplitScan, require_images, scan_split, skipped_line


def scan_dataset(config: DataConfig, cache: bool = True) -> dict[str, SplitScan]:
    return {split: scan_split(sources, config.nc, config.kpt_shape, cache=cache)
            for split, sources in config.splits.items()}


def check_data(data: str | Path | dict[str, Any], cache: bool = True, out: TextIO | None = None) -> dict:
    """Scan a dataset, print a human summary to ``out`` (if given), return the totals over unique images.

    A 'train' or 'val' split without a usable image raises a :class:`~yolostitch.errors.DataError` once the
    summary (with what was skipped) is printed; an empty 'test' split only shows as 0 images, as training
    does not use it."""
    config = load_data_config(data)
    scans = scan_dataset(config, cache)
    total = SplitScan()
    seen_problems = set()
    for split, scan in scans.items():
        total.labels += scan.labels
        for p in scan.problems:  # splits may share folders: report each problem once
            if (p.file, p.reason) not in seen_problems:
                seen_problems.add((p.file, p.reason))
                total.problems.append(p)
        if out is not None:
            s = scan.summary(config.names)
            print(f"{split:>5}: {s['images']} images ({s['backgrounds']} backgrounds), {s['instances']} instances, "
                  f"{s['masks']} masks, {s['keypoint_instances']} with keypoints, {len(s['skipped'])} skipped",
                  file=out)
    summary = total.summary(config.names)
    if out is not None:
        print(f"dataset {config.source} (root {config.root}), {config.nc} classes", file=out)
        for p in total.problems:
            print(f"  {skipped_line(p)}", file=out)
        classes = ", ".join(f"{k} {v}" for k, v in summary["classes"].items())
        print(f"  instances per class: {classes or 'none'}", file=out)
    for split in REQUIRED_SPLITS:
        if split in scans:
            require_images(config, split, config.splits[split], scans[split])
    return summary
