"""Access to the stock YOLOv5 code (PyPI ``yolov5==7.0.14``, a packaging of ultralytics/yolov5 v7.0): the
reference that ``compare.py --stock``, the parity tests and the benchmarks measure yolostitch against.

Install the reference without its heavy, network-bound and conflicting dependencies (notably the PyPI
``thop`` package, whose ``thop`` module would overwrite ultralytics-thop's)::

    pip install --no-deps yolov5==7.0.14
    pip install pandas seaborn tqdm

Everything here is offline and writes nothing to the user's home: the stock config dir (fonts), the
ultralytics settings dir and matplotlib's cache go to a private temporary directory removed at exit.
The shims needed by stock on current libraries are applied here only (see ``_apply_shims``), and the
process-wide side effects of importing stock (environment variables, print options, warning filters,
OpenCV threads, ``sys.path``) are undone after the import.
"""

from __future__ import annotations

import atexit
import copy
import importlib.util
import logging
import os
import shutil
import sys
import tempfile
import threading
import types
import warnings
from pathlib import Path

from ..errors import SetupError, YolostitchError

STOCK_VERSION = "7.0.14"
INSTALL_HINT = f"pip install --no-deps yolov5=={STOCK_VERSION} && pip install pandas seaborn tqdm"

__all__ = [
    "STOCK_VERSION",
    "StockYolov5Unavailable",
    "build_stock_model",
    "import_stock_yolo",
    "stock_gflops",
    "stock_yaml_dir",
]


class StockYolov5Unavailable(YolostitchError, ImportError):
    """The stock yolov5 package (or one of its import-time dependencies) is not installed; the message says
    how to install it. Tests turn it into a skip, the command line into a one-line error."""


_lock = threading.Lock()
_module: types.ModuleType | None = None
_tmp_dir: Path | None = None

# Environment variables this helper sets on purpose and keeps for the life of the process.
_OWN_ENV = ("YOLOV5_CONFIG_DIR", "YOLO_CONFIG_DIR", "YOLO_OFFLINE", "YOLOv5_AUTOINSTALL", "YOLO_AUTOINSTALL",
            "YOLOv5_VERBOSE", "MPLCONFIGDIR")


def _private_dir() -> Path:
    global _tmp_dir
    if _tmp_dir is None:
        _tmp_dir = Path(tempfile.mkdtemp(prefix="yolostitch-stock-yolov5-"))
        atexit.register(shutil.rmtree, _tmp_dir, ignore_errors=True)
    return _tmp_dir


def _set_offline_env() -> None:
    """Point every config/cache dir stock touches at a private temp dir; forbid network and auto-install."""
    tmp = _private_dir()
    yolov5_cfg = tmp / "yolov5"
    yolov5_cfg.mkdir(exist_ok=True)
    os.environ.setdefault("YOLOV5_CONFIG_DIR", str(yolov5_cfg))  # stock CONFIG_DIR (Arial.ttf lives here)
    os.environ["YOLOv5_AUTOINSTALL"] = "False"  # stock check_requirements must never pip install
    os.environ.setdefault("YOLOv5_VERBOSE", "False")
    # stock utils.general imports ultralytics.utils, which writes settings.json and probes DNS at import.
    # Only effective if ultralytics is not imported yet; otherwise whoever imported it chose its setup.
    if "ultralytics" not in sys.modules:
        os.environ["YOLO_OFFLINE"] = "1"
        os.environ["YOLO_AUTOINSTALL"] = "False"
        os.environ.setdefault("YOLO_VERBOSE", "False")  # no settings banner; read at import, restored after
        if "YOLO_CONFIG_DIR" not in os.environ:
            (tmp / "ultralytics").mkdir(exist_ok=True)
            os.environ["YOLO_CONFIG_DIR"] = str(tmp / "ultralytics")
    # matplotlib (imported by stock utils.plots) writes its font cache under ~/.cache or ~/.config.
    if "matplotlib" not in sys.modules and "MPLCONFIGDIR" not in os.environ:
        (tmp / "matplotlib").mkdir(exist_ok=True)
        os.environ["MPLCONFIGDIR"] = str(tmp / "matplotlib")


def _provide_font() -> None:
    """Stock's Annotator downloads Arial.ttf into CONFIG_DIR when absent; supply matplotlib's DejaVuSans."""
    target = Path(os.environ["YOLOV5_CONFIG_DIR"]) / "Arial.ttf"
    if target.exists():
        return
    spec = importlib.util.find_spec("matplotlib")  # locate without importing (MPLCONFIGDIR is set first)
    for location in (spec.submodule_search_locations or []) if spec else []:
        font = Path(location) / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"
        if font.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(font, target)
            return


def _pkg_resources_stand_in() -> types.ModuleType | None:
    """Stock utils/general.py does ``import pkg_resources as pkg`` and only uses ``pkg.parse_version``.

    setuptools>=81 no longer ships pkg_resources; instead of downgrading setuptools machine-wide, a
    stand-in offering just ``parse_version`` is put in sys.modules for the duration of the import.
    """
    if importlib.util.find_spec("pkg_resources") is not None:
        return None
    from packaging.version import parse

    stand_in = types.ModuleType("pkg_resources")
    stand_in.parse_version = parse
    stand_in.__doc__ = "yolostitch test stand-in: only parse_version (for stock yolov5 check_version)."
    return stand_in


def _apply_shims() -> None:
    """Compatibility shims for stock v7.0 on numpy>=2 and Pillow>=10 (additive only; no-ops when not needed)."""
    import numpy as np

    if not hasattr(np, "trapz"):  # removed in numpy 2.x; used by stock utils/metrics.compute_ap
        np.trapz = np.trapezoid

    from PIL import ImageFont

    if not hasattr(ImageFont.FreeTypeFont, "getsize"):  # removed in Pillow 10; used by stock Annotator

        def getsize(self, text, direction=None, features=None, language=None, stroke_width=0):
            # Pillow 9 getsize == size + offset (+2*stroke); getbbox == (offset - stroke, offset + size + stroke)
            _, _, right, bottom = self.getbbox(text, direction=direction, features=features, language=language,
                                               stroke_width=stroke_width)
            return right + stroke_width, bottom + stroke_width

        ImageFont.FreeTypeFont.getsize = getsize


def _import() -> types.ModuleType:
    if importlib.util.find_spec("yolov5") is None:
        raise StockYolov5Unavailable(f"stock yolov5 is not installed; install it with: {INSTALL_HINT}")

    import cv2  # imported (and its own env vars set) before the environment snapshot
    import numpy as np
    import torch
    import torch._tensor_str

    env_before = dict(os.environ)
    _set_offline_env()
    _provide_font()
    _apply_shims()
    np_print = np.get_printoptions()
    torch_print = dict(vars(torch._tensor_str.PRINT_OPTS))
    cv2_threads = cv2.getNumThreads()
    path_before = list(sys.path)
    mpl_font_size = None
    if "matplotlib" in sys.modules:
        mpl_font_size = sys.modules["matplotlib"].rcParams["font.size"]

    stand_in = _pkg_resources_stand_in()
    if stand_in is not None:
        sys.modules["pkg_resources"] = stand_in
    try:
        with warnings.catch_warnings():  # stock torch_utils does filterwarnings('ignore', category=UserWarning)
            try:
                import yolov5.models.yolo as yolo
                import yolov5.models.common  # noqa: F401
                import yolov5.utils.torch_utils  # noqa: F401
            except ModuleNotFoundError as e:
                if e.name and e.name.split(".")[0] == "yolov5":
                    raise
                raise StockYolov5Unavailable(
                    f"stock yolov5 is installed but its import-time dependency {e.name!r} is missing; "
                    f"install with: {INSTALL_HINT}") from e
    finally:
        if stand_in is not None and sys.modules.get("pkg_resources") is stand_in:
            del sys.modules["pkg_resources"]  # stock modules keep their own reference
        # Undo stock's process-wide side effects: OMP_NUM_THREADS, NUMEXPR_MAX_THREADS, TF_CPP_MIN_LOG_LEVEL
        # (and ultralytics' own env changes if it was first imported here, and YOLO_VERBOSE); keep _OWN_ENV.
        for key in set(os.environ) - set(env_before) - set(_OWN_ENV):
            del os.environ[key]
        for key, value in env_before.items():
            if key not in _OWN_ENV and os.environ.get(key) != value:
                os.environ[key] = value
        # stock models/yolo.py appends site-packages/yolov5 to sys.path, making its `models`/`utils`
        # importable as top-level packages (shadowing e.g. a repo-root `models/` dir); undo it.
        sys.path[:] = [p for p in sys.path if p in path_before or not _is_stock_root(p)]
        np.set_printoptions(**np_print)
        torch.set_printoptions(**torch_print)
        cv2.setNumThreads(cv2_threads)
        if "matplotlib" in sys.modules:
            import matplotlib

            if mpl_font_size is not None:
                matplotlib.rcParams["font.size"] = mpl_font_size
            else:
                matplotlib.rcParams["font.size"] = matplotlib.rcParamsDefault["font.size"]

    logging.getLogger("yolov5").setLevel(logging.WARNING)  # no model summary tables in test logs
    return yolo


def _is_stock_root(path: str) -> bool:
    try:
        return (Path(path) / "models" / "yolo.py").is_file() and Path(path).name == "yolov5"
    except OSError:
        return False


def import_stock_yolo() -> types.ModuleType:
    """Return the stock ``yolov5.models.yolo`` module, imported offline with the needed shims.

    Raises ``StockYolov5Unavailable`` (an ImportError) with install instructions when the package or one
    of its import-time dependencies is missing.
    """
    global _module
    with _lock:
        if _module is None:
            _module = _import()
        return _module


def stock_yaml_dir() -> Path:
    """Folder holding the stock model YAMLs (yolov5n.yaml, yolov5s.yaml, ...)."""
    spec = importlib.util.find_spec("yolov5")
    if spec is None or not spec.submodule_search_locations:
        raise StockYolov5Unavailable(f"stock yolov5 is not installed; install it with: {INSTALL_HINT}")
    return Path(next(iter(spec.submodule_search_locations))) / "models"


def build_stock_model(cfg, nc=None, ch=3, verbose=False):
    """Build a stock ``DetectionModel`` (eval mode, float32) from a YAML path, a stock YAML name or a dict.

    ``cfg`` may be a path, a bare name such as ``"yolov5n.yaml"``/``"yolov5n"`` (looked up in
    ``stock_yaml_dir()``), or a model dict (deep-copied: stock would mutate it). ``verbose`` lets stock log
    its layer table and summary.
    """
    yolo = import_stock_yolo()
    if isinstance(cfg, dict):
        cfg = copy.deepcopy(cfg)
    else:
        path = Path(cfg)
        if not path.is_file():
            name = path.name if path.suffix in (".yaml", ".yml") else f"{path.name}.yaml"
            candidate = stock_yaml_dir() / name
            if not candidate.is_file():
                raise FileNotFoundError(f"no YOLOv5 YAML at {cfg!s} nor {candidate}")
            path = candidate
        cfg = str(path)
    logger = logging.getLogger("yolov5")
    level = logger.level
    logger.setLevel(logging.INFO if verbose else logging.WARNING)
    try:
        model = yolo.DetectionModel(cfg, ch=ch, nc=nc)
    finally:
        logger.setLevel(level)
    return model.float().eval()


def stock_gflops(model, imgsz=640) -> float:
    """GFLOPs exactly as stock ``yolov5.utils.torch_utils.model_info`` computes them (unrounded).

    Stock profiles a stride-sized input with thop, doubles the MACs and scales to ``imgsz``; it prints the
    result with one decimal (``round(stock_gflops(m), 1)`` matches its log). Uses the ``thop`` module stock
    imported, i.e. ultralytics-thop when the PyPI ``thop`` package is (rightly) not installed.
    """
    import_stock_yolo()
    import torch
    from yolov5.utils import torch_utils

    if torch_utils.thop is None:
        raise SetupError("stock yolov5 found no thop module; GFLOPs unavailable (install ultralytics-thop)")
    p = next(model.parameters())
    stride = max(int(model.stride.max()), 32) if hasattr(model, "stride") else 32
    im = torch.empty((1, p.shape[1], stride, stride), device=p.device)
    flops = torch_utils.thop.profile(copy.deepcopy(model), inputs=(im,), verbose=False)[0] / 1e9 * 2
    imgsz = imgsz if isinstance(imgsz, (list, tuple)) else [imgsz, imgsz]
    return flops * imgsz[0] / stride * imgsz[1] / stride
