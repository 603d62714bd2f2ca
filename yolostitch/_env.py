"""Process set-up that must run before ultralytics is imported.

At import, ultralytics writes a settings JSON into the user's config directory, can probe the network
and sets ``OMP_NUM_THREADS=1``. yolostitch promises to touch no network and to write nothing outside
the run directory, so it points ultralytics at a private temporary config directory (removed at exit),
forces offline mode and gives back the thread setting the user had. It also checks the versions of torch (an
older one than yolostitch needs is refused) and ultralytics (another one is named in a warning line), as
:mod:`yolostitch._versions` says.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

from ._versions import LOGGER, check_torch, installed_version, ultralytics_mismatch


def _import_ultralytics_quietly() -> None:
    os.environ["YOLO_OFFLINE"] = "1"  # never probe the network, whatever the caller had
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # timm (an optional extractor source) must not reach the hub
    os.environ.setdefault("YOLO_VERBOSE", "False")  # no settings banner on every import
    if "YOLO_CONFIG_DIR" not in os.environ:
        config_dir = tempfile.mkdtemp(prefix="yolostitch-ultralytics-")
        os.environ["YOLO_CONFIG_DIR"] = config_dir
        atexit.register(shutil.rmtree, config_dir, ignore_errors=True)
    # torch fixes its CPU thread count from OMP_NUM_THREADS when it loads: load it before ultralytics sets that
    # to 1, or every yolostitch process would train on one core
    import torch

    check_torch(torch.__version__)
    omp_threads = os.environ.get("OMP_NUM_THREADS")
    installed = installed_version("ultralytics")
    mismatch = ultralytics_mismatch(installed)
    if mismatch and installed:  # another version: say which one is needed, and go on (it may well work)
        LOGGER.warning(mismatch)
    try:
        import ultralytics.nn.modules  # noqa: F401  (the import is the point)
    except ImportError as e:
        raise ImportError(f"{mismatch or 'ultralytics does not import'} ({type(e).__name__}: {e})") from e

    if omp_threads is None:
        os.environ.pop("OMP_NUM_THREADS", None)


_import_ultralytics_quietly()
