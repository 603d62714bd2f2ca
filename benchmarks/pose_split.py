"""A reproducible train/val split of ``coco-persons`` (80 real COCO train2017 images, person keypoints) for the
keypoint benchmarks.

    python benchmarks/pose_split.py [--src DIR] [--out DIR]     # writes OUT/persons.yaml, prints its path
    python benchmarks/pose_split.py --all-classes               # the same split, all 80 classes: OUT/coco80.yaml

Rule: the images of ``annotations/person_keypoints_train2017.json`` sorted by file name; the first 64 are train,
the last 16 val (``N_TRAIN``). Each split is a COCO JSON holding only its images and their annotations, written
to ``OUT`` beside an ``images`` link to the dataset's ``train2017/`` (a layout ``yolostitch.data.coco`` resolves),
plus a data YAML with ``names: [person]``, ``kpt_shape: [17, 3]`` and COCO's left/right ``flip_idx``.
Only 16 val images (about 30 persons, about half with keypoints): figures measured on them are noisy.
``--all-classes`` splits ``annotations/instances_train2017.json`` instead (the same images, every COCO category,
boxes and polygons, ``names`` in COCO's id order as the official checkpoints have them), into ``OUT-80`` by
default: the data on which stock's ``--weights`` loads a COCO checkpoint whole, Detect included.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import yaml

DEFAULT_SRC = Path(os.environ.get("YOLOSTITCH_SHARED", "/work/shared")) / "datasets" / "coco-persons"
KEYPOINTS_JSON = Path("annotations") / "person_keypoints_train2017.json"
INSTANCES_JSON = Path("annotations") / "instances_train2017.json"
N_TRAIN = 64
COCO_FLIP_IDX = [0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15]  # nose, then (left, right) pairs


def split_names(file_names: list[str], n_train: int = N_TRAIN) -> tuple[list[str], list[str]]:
    """(train, val) file names: sorted, the first ``n_train`` train, the rest val."""
    ordered = sorted(file_names)
    if not 0 < n_train < len(ordered):
        raise ValueError(f"need more than {n_train} images to split, got {len(ordered)}")
    return ordered[:n_train], ordered[n_train:]


def _subset(coco: dict, keep: set[str]) -> dict:
    images = [im for im in coco["images"] if im["file_name"] in keep]
    ids = {im["id"] for im in images}
    return {**coco, "images": images, "annotations": [a for a in coco["annotations"] if a["image_id"] in ids]}


def write_split(src: Path = DEFAULT_SRC, out: Path = Path("/tmp/coco-persons-split"), n_train: int = N_TRAIN,
                all_classes: bool = False) -> Path:
    """Write the two split JSONs, the ``images`` link and the data YAML into ``out``; return the YAML's path.
    ``all_classes``: every COCO category from the instances JSON (``coco80.yaml``) instead of the person keypoints."""
    coco = json.loads((src / (INSTANCES_JSON if all_classes else KEYPOINTS_JSON)).read_text())
    train, val = split_names([im["file_name"] for im in coco["images"]], n_train)
    out.mkdir(parents=True, exist_ok=True)
    link = out / "images"
    if link.is_symlink() and Path(os.readlink(link)) != (src / "train2017").resolve():
        link.unlink()
    if not link.exists():
        link.symlink_to((src / "train2017").resolve(), target_is_directory=True)
    for name, names in (("train", train), ("val", val)):
        (out / f"{name}.json").write_text(json.dumps(_subset(coco, set(names))))
    config = {"path": str(out.resolve()), "train": "train.json", "val": "val.json"}
    if all_classes:
        config["names"] = [c["name"] for c in sorted(coco["categories"], key=lambda c: c["id"])]
    else:
        config.update(names=["person"], kpt_shape=[17, 3], flip_idx=COCO_FLIP_IDX)
    path = out / ("coco80.yaml" if all_classes else "persons.yaml")
    header = (f"# coco-persons split by {Path(__file__).name}: first {n_train} of the sorted file names train, "
              f"the remaining {len(val)} val\n")
    path.write_text(header + yaml.safe_dump(config, sort_keys=False, default_flow_style=None, width=200))
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--src", type=Path, default=DEFAULT_SRC, help="the coco-persons folder (COCO layout)")
    p.add_argument("--out", type=Path, default=None, help="default /tmp/coco-persons-split (-80 with --all-classes)")
    p.add_argument("--all-classes", action="store_true", help="every COCO category (instances JSON), not persons")
    args = p.parse_args()
    out = args.out or Path("/tmp/coco-persons-split" + ("-80" if args.all_classes else ""))
    print(write_split(args.src, out, all_classes=args.all_classes))


if __name__ == "__main__":
    main()
