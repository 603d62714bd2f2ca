"""Data YAMLs in the YOLOv5/ultralytics convention.

Keys: ``path`` (dataset root), ``train``/``val``/``test`` (each a folder of images, a ``.txt`` list of image
paths, a COCO ``.json`` file, or a list of these; relative to ``path``), ``names`` (list or dict), ``nc``,
``kpt_shape`` ([K, 2|3]) and ``flip_idx``. A relative ``path`` is looked up beside the YAML (from the project root for the built-in
YAMLs in ``data/``, as stock YOLOv5 does), then in the current directory, then in the project root.

A ``generator`` key makes a built-in synthetic dataset: it is generated on first use (deterministically) into
``$YOLOSTITCH_DATASETS`` (default ``~/.cache/yolostitch/datasets``) unless ``path`` is absolute.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..models.config import PROJECT_ROOT
from ..yaml_io import read_yaml_mapping

SPLITS = ("train", "val", "test")


class DataConfigError(ValueError):
    """A data YAML that cannot be used; the message names the file and key."""


@dataclass
class DataConfig:
    root: Path
    splits: dict[str, list[Path]]  # split -> sources (folders, .txt lists, .json files)
    names: dict[int, str]
    kpt_shape: list[int] | None = None
    flip_idx: list[int] | None = None
    source: str = "<dict>"
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def nc(self) -> int:
        return len(self.names)


def data_yaml_dirs() -> list[Path]:
    import sys

    return [PROJECT_ROOT / "data", Path(sys.prefix) / "share" / "yolostitch" / "data"]


def find_data_yaml(name: str | Path) -> Path:
    path = Path(name)
    if path.is_file():
        return path
    for folder in data_yaml_dirs():
        for candidate in (path.name, f"{path.name}.yaml"):
            if (folder / candidate).is_file():
                return folder / candidate
    raise FileNotFoundError(f"data config {str(name)!r} not found as a file nor among the built-in data YAMLs "
                            f"in {data_yaml_dirs()[0]}")


def load_data_config(data: str | Path | dict[str, Any]) -> DataConfig:
    """Read and check a data YAML (or dict); generate a built-in synthetic dataset if it declares one."""
    if isinstance(data, dict):
        raw, source, base = dict(data), "<dict>", Path.cwd()
    else:
        path = find_data_yaml(data)
        raw = read_yaml_mapping(path, DataConfigError, "data config")
        # built-in YAMLs use stock's convention: relative paths start at the project root
        source = str(path)
        base = PROJECT_ROOT if path.resolve().parent in [d.resolve() for d in data_yaml_dirs()] else path.parent
    names = _names(raw, source)
    kpt_shape = _kpt_shape(raw, source)
    flip_idx = raw.get("flip_idx")
    if flip_idx is not None and (not kpt_shape or sorted(flip_idx) != list(range(kpt_shape[0]))):
        raise DataConfigError(f"{source}: flip_idx must be a permutation of range(K) for kpt_shape {kpt_shape}, "
                              f"got {flip_idx}")
    root = _generated_root(raw, source) if raw.get("generator") else _root(raw.get("path"), base)
    splits = {}
    for split in SPLITS:
        value = raw.get(split)
        if value:
            items = value if isinstance(value, list) else [value]
            splits[split] = [p if p.is_absolute() else root / p for p in map(Path, items)]
    if "train" not in splits and "val" not in splits:
        raise DataConfigError(f"{source}: needs at least one of 'train' or 'val'")
    return DataConfig(root, splits, names, kpt_shape, flip_idx, source, raw)


def _names(raw: dict[str, Any], source: str) -> dict[int, str]:
    names = raw.get("names")
    if isinstance(names, list):
        names = dict(enumerate(names))
    elif isinstance(names, dict):
        try:
            names = {int(k): str(v) for k, v in names.items()}
        except (TypeError, ValueError):
            raise DataConfigError(f"{source}: 'names' keys must be class indices 0..nc-1") from None
    elif names is None and isinstance(raw.get("nc"), int):
        names = {i: f"class{i}" for i in range(raw["nc"])}
    else:
        raise DataConfigError(f"{source}: needs 'names' (a list or a dict of class index -> name)")
    if sorted(names) != list(range(len(names))):
        raise DataConfigError(f"{source}: 'names' must cover class indices 0..{len(names) - 1} exactly")
    nc = raw.get("nc")
    if nc is not None and nc != len(names):
        raise DataConfigError(f"{source}: nc is {nc} but {len(names)} names are given")
    return names


def _kpt_shape(raw: dict[str, Any], source: str) -> list[int] | None:
    shape = raw.get("kpt_shape")
    if shape is None:
        return None
    if not (isinstance(shape, list) and len(shape) == 2 and all(isinstance(v, int) for v in shape)
            and shape[0] > 0 and shape[1] in (2, 3)):
        raise DataConfigError(f"{source}: kpt_shape must be [K, 2] or [K, 3] with K > 0, got {shape!r}")
    return list(shape)


def _root(path: Any, base: Path) -> Path:
    if not path:
        return base
    path = Path(str(path)).expanduser()
    if path.is_absolute():
        return path
    for folder in (base, Path.cwd(), PROJECT_ROOT):
        if (folder / path).exists():
            return (folder / path).resolve()
    return (base / path).resolve()


def datasets_dir() -> Path:
    return Path(os.environ.get("YOLOSTITCH_DATASETS", Path.home() / ".cache" / "yolostitch" / "datasets"))


def _generated_root(raw: dict[str, Any], source: str) -> Path:
    spec = dict(raw["generator"])
    name = spec.pop("name", None)
    if name != "shapes":
        raise DataConfigError(f"{source}: unknown generator {name!r} (available: shapes)")
    path = Path(str(raw.get("path") or name))
    if not path.is_absolute():
        digest = hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:8]
        path = datasets_dir() / f"{path.name}-{digest}"
    from .shapes import ensure_shapes

    try:
        return Path(ensure_shapes(path, **spec))
    except TypeError as e:
        raise DataConfigError(f"{source}: bad generator arguments {spec}: {e}") from None
