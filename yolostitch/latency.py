"""CPU latency per image, measured the same way for every row of a comparison: ours in ``compare`` and stock's
in the child process of ``run_stock`` (the same timing around stock's own inference). Both import it from here,
so neither package imports the other's."""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np
import torch

from .errors import DataError


def read_images(files: Sequence[str | Path]) -> list[tuple[str, np.ndarray]]:
    """(path, BGR array) of each readable file; unreadable ones are left out (the scan already reported them)."""
    images = []
    for f in files:
        image = cv2.imread(str(f))
        if image is not None:
            images.append((str(f), image))
    if not images:
        raise DataError(f"none of the {len(files)} latency images could be read (first: {files[0] if files else '-'})")
    return images


def latency_ms(detect: Callable, images: Sequence[tuple[str, np.ndarray]], threads: int, warmup: int = 3
               ) -> float:
    """Median milliseconds of ``detect(image)`` per image, one image at a time, after ``warmup`` calls.

    The median of single-image calls, not a mean over a batch: it is what one image waits, and one slow call
    (another process taking the CPU) does not move it. ``detect(image, path)`` gets the file name too, which a
    model reading cached feature maps needs. Runs on ``threads`` torch threads, the same for every row.
    """
    torch.set_num_threads(threads)
    for path, image in list(images)[:warmup]:
        detect(image, path)
    times = []
    for path, image in images:
        start = time.perf_counter()
        detect(image, path)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)
