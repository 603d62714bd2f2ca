"""``--cache disk``, as stock: each decoded image kept as a ``.npy`` file beside it (``images/x.jpg`` ->
``images/x.npy``), read instead of decoding the image again. Files are written atomically, a ``.npy`` older than
its image is written anew, and they are read with ``allow_pickle=False`` (a data file never runs code). Where the
image folder is read-only the images are decoded as usual, with one warning.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable

import cv2
import numpy as np

LOGGER = logging.getLogger(__name__)


def npy_path(im_file: str | Path) -> Path:
    return Path(im_file).with_suffix(".npy")


def _fresh(npy: Path, image: Path) -> bool:
    try:
        return npy.stat().st_mtime >= image.stat().st_mtime
    except OSError:
        return False


class DiskCache:
    """Decoded images as ``.npy`` files beside the images; :meth:`read` is a drop-in for ``cv2.imread``."""

    def __init__(self) -> None:
        self.unwritable: set[Path] = set()  # folders we could not write to (warned once each)

    def read(self, im_file: str | Path) -> np.ndarray | None:
        image, npy = Path(im_file), npy_path(im_file)
        if _fresh(npy, image):
            try:
                return np.load(npy, allow_pickle=False)
            except (OSError, ValueError) as e:
                LOGGER.warning(f"{npy}: unreadable cache file ({e}); decoding {image.name} again")
        img = cv2.imread(str(image))
        if img is not None:
            self._write(npy, img)
        return img

    def _write(self, npy: Path, img: np.ndarray) -> None:
        if npy.parent in self.unwritable:
            return
        tmp = npy.with_name(f".{npy.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as f:
                np.save(f, img, allow_pickle=False)
            os.replace(tmp, npy)
        except OSError as e:
            self.unwritable.add(npy.parent)
            tmp.unlink(missing_ok=True)
            LOGGER.warning(f"--cache disk: cannot write {npy} ({e.strerror or e}); images in {npy.parent} are "
                           "decoded each time instead")

    def fill(self, files: Iterable[str | Path]) -> int:
        """Write the missing or stale ``.npy`` files up front (in threads); return the bytes cached."""
        files = list(files)
        with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
            sizes = pool.map(lambda f: getattr(self.read(f), "nbytes", 0), files)
            return sum(sizes)
