"""Validate weights on a dataset: ``python val.py --weights W.pt --data D.yaml`` (see ``--help``)."""

import sys

from yolostitch.cli import main

if __name__ == "__main__":
    sys.exit(main(["val", *sys.argv[1:]]))
