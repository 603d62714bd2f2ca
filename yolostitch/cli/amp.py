"""Flags shared by several commands: ``--amp`` (train, val, detect, compare; the policy is
``engine.precision``), ``--extractor`` and ``--dnn`` (val, detect), the one-or-two-value ``--imgsz``
(detect, export) and integer flags with a lower bound (:func:`int_at_least`).
No torch import, so building the parser stays fast."""

from __future__ import annotations

import argparse
from typing import Callable

AMP_CHOICES = ("auto", "off")  # engine.precision.AMP_MODES (a test keeps them equal)


def int_at_least(minimum: int, also: tuple[int, ...] = ()) -> Callable[[str], int]:
    """An argparse ``type``: an integer >= ``minimum`` (or one of ``also``); anything else is a one-line usage
    error naming the flag, instead of a failure deep inside training."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum and value not in also:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value
    return parse


def add_amp_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--amp", default="auto", choices=AMP_CHOICES,
                   help="mixed precision: auto = bf16 autocast + channels-last on CPUs with native bf16 "
                        "(AVX512-BF16/AMX), fp16 + GradScaler on CUDA, fp32 elsewhere; off = fp32 throughout")


def add_half_argument(p: argparse.ArgumentParser) -> None:
    """val's and detect's ``--half``, stock's flag: fp16 inference on CUDA, which ``--amp auto`` already gives
    there (as autocast; stock casts the weights); on a CPU stock ignores it, and so do we: ``--amp`` decides."""
    p.add_argument("--half", action="store_true", help="fp16 inference on CUDA, as stock (what --amp auto does "
                   "there); ignored on a CPU, as stock")


def check_half(args: argparse.Namespace) -> None:
    if getattr(args, "half", False) and args.amp == "off":
        from ..errors import FlagError

        raise FlagError("--half and --amp off: fp16 or fp32? give one")


def add_extractor_arguments(p: argparse.ArgumentParser) -> None:
    """val's and detect's ``--extractor``/``--extractor-weights``: the user names code a checkpoint may not run."""
    p.add_argument("--extractor", default="", help="for a FeatureInput model: run this extractor online (any spec, "
                   "as train.py's; needed for a model trained with torchscript:FILE or module:function, which a "
                   "checkpoint cannot make run by itself); default: the built-in extractor the model was trained with")
    p.add_argument("--extractor-weights", default="", help="weights file for a torchvision/timm --extractor "
                   "(default: the one recorded when --extractor is the recorded spec)")


def add_image_size_argument(p: argparse.ArgumentParser, help: str) -> None:
    """Stock detect.py's and export.py's ``--imgsz``: one value (square) or two (height width)."""
    p.add_argument("--imgsz", "--img", "--img-size", nargs="+", type=int, default=[640], metavar="PIXELS",
                   help=f"{help}: one value (square) or two (height width), as stock")


def image_size(values: int | list[int]) -> int | tuple[int, int]:
    """``--imgsz``'s values as an int (square) or (height, width)."""
    from ..errors import FlagError

    if isinstance(values, int):
        return values
    if len(values) not in (1, 2):
        raise FlagError(f"--imgsz takes one value (square) or two (height width), got {len(values)}: {values}")
    if any(v < 1 for v in values):
        raise FlagError(f"--imgsz must be positive, got {values}")
    return values[0] if len(values) == 1 or values[0] == values[1] else (values[0], values[1])


def add_dnn_argument(p: argparse.ArgumentParser) -> None:
    """val's and detect's ``--dnn``, stock's flag: an .onnx file in OpenCV DNN instead of onnxruntime."""
    p.add_argument("--dnn", action="store_true", help="run an .onnx file in OpenCV DNN instead of onnxruntime, as "
                   "stock")


def add_inference_arguments(p: argparse.ArgumentParser) -> None:
    """The inference flags val and detect share: ``--augment``, the extractor, ``--amp``, ``--half``, ``--dnn``."""
    p.add_argument("--augment", action="store_true", help="augmented inference (test-time augmentation, as stock: "
                   "the image at 1, 0.83 mirrored and 0.67 of its size, one NMS over all)")
    add_extractor_arguments(p)
    add_amp_argument(p)
    add_half_argument(p)
    add_dnn_argument(p)
