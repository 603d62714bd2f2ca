"""Train a model: ``python train.py --cfg yolov5n.yaml --data shapes.yaml`` (see ``--help``)."""

import sys

from yolostitch.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
