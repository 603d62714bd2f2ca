"""What ``detect.py --source`` names: local image and video files, and their frames one by one.

Sources are local only (an image, a directory, a glob, a ``.txt`` list of paths, or a video file): nothing is
ever downloaded, so URLs, streams and webcams are refused.
"""

from __future__ import annotations

import glob
import re
from pathlib import Path
from typing import Any, Iterator, Sequence

import cv2
import numpy as np

from ..data.scan import IMAGE_SUFFIXES
from ..errors import FlagError

VIDEO_SUFFIXES = {".asf", ".avi", ".gif", ".m4v", ".mkv", ".mov", ".mp4", ".mpeg", ".mpg", ".ts", ".wmv", ".webm"}
_URL = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)


def list_sources(source: str | Path) -> list[Path]:
    """The image and video files ``source`` names, in order.

    ``source``: an image or video file, a directory (its images and videos, not recursive), a glob pattern
    (``**`` recurses) or a ``.txt`` file listing one of those per line (relative paths from the list's
    folder when not found from the working directory). Raises ValueError for URLs, streams and webcams (nothing is
    downloaded or opened from a network) and FileNotFoundError, naming the path, for anything missing.
    """
    text = str(source).strip()
    if _URL.match(text):
        raise FlagError(f"--source {text}: URLs and streams are not supported (nothing is downloaded); "
                        "download the file yourself and pass its local path")
    path = Path(text).expanduser()
    if not path.exists() and text.isdigit():
        raise FlagError(f"--source {text}: webcams are not supported; pass an image, directory, glob, .txt list "
                        "or video file")
    if not path.exists() and any(c in text for c in "*?["):
        files = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
        files = [p for p in files if _is_media(p)]
        if not files:
            raise FileNotFoundError(f"--source {text}: no images or videos match this pattern")
        return files
    if not path.exists():
        raise FileNotFoundError(f"--source {text}: no such file or directory")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and _is_media(p))
        if not files:
            raise FileNotFoundError(f"--source {text}: the directory holds no images or videos "
                                    f"({', '.join(sorted(IMAGE_SUFFIXES | VIDEO_SUFFIXES))})")
        return files
    if path.suffix.lower() == ".txt":
        return [f for line in path.read_text().splitlines() if line.strip()
                for f in _listed(line.strip(), path)]
    if not _is_media(path):
        raise FlagError(f"--source {text}: not an image or video file (suffix {path.suffix or 'none'!r})")
    return [path]


def _is_media(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES


def _listed(entry: str, listing: Path) -> list[Path]:
    """The files one line of a ``.txt`` list names (a file, directory or glob; relative to the list's folder
    when not found from the working directory). Lists inside lists are not followed."""
    path = Path(entry).expanduser()
    if not path.is_absolute() and not path.exists() and not _URL.match(entry):
        beside = listing.parent / path
        if beside.exists() or glob.glob(str(beside)):
            entry = str(beside)
    if Path(entry).suffix.lower() == ".txt":
        raise FlagError(f"{listing}: {entry}: a list inside a list is not supported")
    try:
        return list_sources(entry)
    except (FileNotFoundError, ValueError) as e:
        raise type(e)(f"{listing}: {str(e).removeprefix('--source ')}") from None


def iter_frames(files: Sequence[Path], vid_stride: int = 1
                ) -> Iterator[tuple[int, Path, int | None, int, np.ndarray | None, Any]]:
    """(file number, file, video frame (1-based) or None, frames in the video, BGR image, capture) for every
    image and every ``vid_stride``-th video frame (frames vid_stride, 2 x vid_stride, ..., as stock's
    ``--vid-stride``); the image is None for a file that cannot be read."""
    if vid_stride < 1:
        raise FlagError(f"--vid-stride {vid_stride}: must be 1 or more (1 = every frame)")
    for number, path in enumerate(files, 1):
        if path.suffix.lower() not in VIDEO_SUFFIXES:
            yield number, path, None, 0, cv2.imread(str(path)), None
            continue
        cap = cv2.VideoCapture(str(path))
        try:
            count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else 0
            frame = 0
            while cap.isOpened():
                grabbed = 0
                while grabbed < vid_stride and cap.grab():  # skipped frames are not decoded
                    grabbed += 1
                frame += grabbed
                if grabbed < vid_stride:
                    break
                ok, image = cap.retrieve()
                if not ok:
                    break
                yield number, path, frame, count, image, cap
            if frame == 0:  # not a single frame: unreadable
                yield number, path, None, 0, None, None
        finally:
            cap.release()
