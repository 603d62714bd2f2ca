"""A split source that is a COCO JSON, and the folders its images are looked for in.

COCO's own layout keeps annotations apart from the images (``annotations/instances_val2017.json`` beside
``val2017/``) and its ``file_name`` entries are bare names, so a JSON does not say where its images are. A data
YAML may name the folder (``val: {json: annotations/x.json, images: val2017}``); otherwise the usual places
are searched, in this order (see :func:`image_folders`):

1. the JSON's own folder, ``<json dir>/../images`` and ``<json dir>/images`` (layouts read before COCO's own);
2. ``<root>/<split>`` and ``<root>/images/<split>``, where ``<split>`` is the last ``_``-separated token of the
   JSON's file name (``person_keypoints_train2017.json`` -> ``train2017``) and ``<root>`` is the dataset root
   (``path`` in the YAML) and the JSON folder's parent;
3. ``<root>`` itself, for ``file_name`` entries that carry their folder (``train2017/x.jpg``).

An explicit folder is the only one searched.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


class CocoSource(type(Path())):  # the concrete Path class (PosixPath/WindowsPath) can be subclassed on 3.11
    """The path of a COCO JSON (a :class:`~pathlib.Path` everywhere a split source is used) that also carries
    the YAML's explicit image folder (``images``) and the dataset root (``root``). Paths derived from it
    (``.parent``, ``/``) are plain paths again: the class defaults are ``None``."""

    images: Path | None = None
    root: Path | None = None

    def __reduce__(self) -> tuple[Any, tuple]:
        return coco_source, (str(self), self.images, self.root)


def coco_source(json_path: str | Path, images: str | Path | None = None, root: str | Path | None = None
                ) -> CocoSource:
    """A :class:`CocoSource` for ``json_path``; ``images``: the folder its ``file_name`` entries are in, if known."""
    source = CocoSource(json_path)
    source.images = Path(images) if images is not None else None
    source.root = Path(root) if root is not None else None
    return source


def split_name(json_path: str | Path) -> str:
    """The split a COCO JSON's name ends with: ``instances_val2017.json`` -> ``val2017``."""
    return Path(json_path).stem.rsplit("_", 1)[-1]


def image_folders(json_path: str | Path, images: str | Path | None = None, root: str | Path | None = None
                  ) -> list[str]:
    """Absolute folders to look for a JSON's images in, most likely first (the module docstring's order)."""
    if images is not None:
        return [os.path.abspath(images)]
    json_dir = os.path.dirname(os.path.abspath(json_path))
    parent = os.path.dirname(json_dir)
    split = split_name(json_path)
    bases = [os.path.abspath(root), parent] if root is not None else [parent]
    candidates = [json_dir, os.path.join(parent, "images"), os.path.join(json_dir, "images")]
    for base in bases:
        candidates += [os.path.join(base, split), os.path.join(base, "images", split)]
    candidates += bases
    return list(dict.fromkeys(os.path.normpath(c) for c in candidates))


class ImageFinder:
    """``file_name`` -> absolute image path in the first folder that holds it.

    The folder that held the previous image is tried first, so a large JSON costs one ``stat`` per image.
    An image found nowhere gets the path under the first folder (and the caller reports it missing).
    """

    def __init__(self, folders: list[str]) -> None:
        self.folders = folders
        self._last: str | None = None

    def __call__(self, file_name: str) -> str:
        order = self.folders if self._last is None else [self._last, *self.folders]
        for folder in order:
            path = os.path.join(folder, file_name)
            if os.path.isfile(path):
                self._last = folder
                return os.path.abspath(path)
        return os.path.abspath(os.path.join(self.folders[0], file_name))
