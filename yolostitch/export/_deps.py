"""Optional dependencies of exporting, imported on use so that ``import yolostitch`` never needs them."""

from __future__ import annotations

import contextlib
import importlib
import logging
import warnings
from types import ModuleType
from typing import Iterator

ONNX_MISSING = "ONNX export needs onnx and onnxruntime: pip install onnx onnxruntime"
SIMPLIFIER_MISSING = "--simplify needs onnxslim (or stock's onnx-simplifier): pip install onnxslim"


def require_onnx() -> tuple[ModuleType, ModuleType]:
    """(onnx, onnxruntime), or an ImportError saying what to install (not a traceback from deep inside)."""
    try:
        import onnx
        import onnxruntime
    except ImportError as e:
        raise ImportError(ONNX_MISSING) from e
    return onnx, onnxruntime


def require_simplifier() -> tuple[str, ModuleType]:
    """(name, module) of an ONNX graph simplifier: onnxslim (ultralytics' choice), else onnxsim (stock YOLOv5's);
    or an ImportError saying what to install."""
    for name in ("onnxslim", "onnxsim"):
        try:
            return name, importlib.import_module(name)
        except ImportError:
            continue
    raise ImportError(SIMPLIFIER_MISSING)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence what exporters say that a user cannot act on: tracer warnings about Python-side shape logic
    (shapes are fixed per export), deprecation notices of the legacy exporter and TorchScript, and
    onnxruntime's root-logger hint about pre-processing (it fails on dynamic-batch models anyway).

    A NullHandler is put on the root logger meanwhile so that ``logging.warning`` does not install a stderr
    handler on the application's root logger as a side effect.
    """
    root = logging.getLogger()
    null = logging.NullHandler()
    root.addHandler(null)
    previous = root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)
        root.removeHandler(null)
