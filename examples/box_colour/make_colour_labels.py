"""Write ``colours/<stem>.txt`` for every image of a data YAML: one colour index (``colour_task.COLOURS``) per
instance of its label file, from the mean colour of the instance's polygon (its box when it has none).

    python examples/box_colour/make_colour_labels.py --data shapes.yaml
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

from yolostitch.data.config import load_data_config
from yolostitch.data.scan import scan_split
from yolostitch.plugins import load_plugin

plugin = load_plugin(str(Path(__file__).with_name("colour_task.py")))  # the same module --plugin loads
COLOURS, colour_file = plugin.COLOURS, plugin.colour_file

GREY_SATURATION, DARK_VALUE = 60, 50  # OpenCV HSV (0-255): below these an object reads as grey/black


def colour_of(bgr: np.ndarray) -> int:
    """Index in COLOURS of a mean BGR colour: grey when unsaturated or dark, else its hue in 60-degree bins
    centred on red, yellow, green, cyan, blue, magenta."""
    h, s, v = cv2.cvtColor(np.uint8(np.clip(bgr, 0, 255))[None, None], cv2.COLOR_BGR2HSV)[0, 0].astype(int)
    if s < GREY_SATURATION or v < DARK_VALUE:
        return COLOURS.index("grey")
    return int(((h * 2 + 30) % 360) // 60)


def instance_colours(labels) -> list[int]:
    image = cv2.imread(labels.im_file)
    h, w = image.shape[:2]
    out = []
    for box, polygon in zip(labels.bboxes, labels.segments):
        region = np.zeros((h, w), np.uint8)
        if len(polygon) >= 3:
            cv2.fillPoly(region, [np.round(polygon * [w, h]).astype(np.int32)], 1)
        else:
            cx, cy, bw, bh = box * [w, h, w, h]
            region[int(cy - bh / 2):int(cy + bh / 2) + 1, int(cx - bw / 2):int(cx + bw / 2) + 1] = 1
        pixels = image[region.astype(bool)]
        out.append(colour_of(pixels.mean(0)) if len(pixels) else -1)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="shapes.yaml")
    args = p.parse_args()
    config = load_data_config(args.data)
    written = 0
    for split, sources in config.splits.items():
        for labels in scan_split(sources, config.nc, config.kpt_shape).labels:
            path = colour_file(labels.im_file)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("\n".join(str(c) for c in instance_colours(labels)) + "\n")
            written += 1
    print(f"{written} colour files written beside the label folders of {config.source}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
