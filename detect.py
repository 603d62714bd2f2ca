"""Run weights on images or videos: ``python detect.py --weights W.pt --source S`` (see ``--help``)."""

import sys

from yolostitch.cli import main

if __name__ == "__main__":
    sys.exit(main(["detect", *sys.argv[1:]]))
