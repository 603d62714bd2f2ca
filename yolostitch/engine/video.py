"""Annotated copies of source videos written by ``detect.py --save``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..errors import SetupError


class VideoWriters:
    """One ``<stem>.mp4`` per source video in ``save_dir``, at the source's frame rate (30 when it gives none),
    opened on its first frame; :meth:`close` (or leaving a ``with`` block) releases them all."""

    def __init__(self, save_dir: Path | None):
        self.save_dir = save_dir
        self._open: dict[Path, tuple[cv2.VideoWriter, Path]] = {}

    def write(self, path: Path, cap: Any, frame: np.ndarray) -> Path:
        """Append ``frame`` to the copy of video ``path`` (read through capture ``cap``); returns the copy's path."""
        if path not in self._open:
            self._open[path] = self._opened(path, cap, frame.shape[:2])
        writer, out = self._open[path]
        writer.write(frame)
        return out

    def _opened(self, path: Path, cap: Any, size: tuple[int, int]) -> tuple[cv2.VideoWriter, Path]:
        fps = cap.get(cv2.CAP_PROP_FPS) if cap is not None else 0
        out = self.save_dir / f"{path.stem}.mp4"
        h, w = size
        writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), fps if fps and fps > 0 else 30, (w, h))
        if not writer.isOpened():
            raise SetupError(f"cannot write video {out}: this OpenCV build has no mp4v encoder")
        return writer, out

    def close(self) -> None:
        for writer, _ in self._open.values():
            writer.release()
        self._open.clear()

    def __enter__(self) -> VideoWriters:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
