"""Write a feature cache: ``python extract.py --extractor X --data Y.yaml --imgsz N --out DIR`` (see ``--help``)."""

import sys

from yolostitch.cli import main

if __name__ == "__main__":
    sys.exit(main(["extract", *sys.argv[1:]]))
