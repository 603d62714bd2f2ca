"""Export weights to ONNX / TorchScript: ``python export.py --weights W.pt --include onnx`` (see ``--help``)."""

import sys

from yolostitch.cli import main

if __name__ == "__main__":
    sys.exit(main(["export", *sys.argv[1:]]))
