"""Compare models side by side: ``python compare.py --data D.yaml --cfg A.yaml B.yaml [--stock]`` (see ``--help``)."""

import sys

from yolostitch.cli import main

if __name__ == "__main__":
    sys.exit(main(["compare", *sys.argv[1:]]))
