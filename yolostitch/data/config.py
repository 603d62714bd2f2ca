"""Data YAMLs in the YOLOv5/ultralytics convention.

Keys: ``path`` (dataset root), ``train``/``val``/``test`` (each a folder of images, a ``.txt`` list of image
paths, a COCO ``.json`` file, or a list of these; relative to ``path``), ``names`` (list or dict), ``nc``,
``kpt_shape`` ([K, 2|3]) and ``flip_idx``. A relative ``path`` is looked up beside the YAML (from the project root
for the built-in YAMLs in ``data/``, as stock YOLOv5 does), then in the current directory, then in the project root.

A COCO JSON finds its images in COCO's own layout (``annotations/instances_val2017.json`` -> ``<path>/val2017/``,
the split being the file name's last ``_``-separated token), in ``<path>/images/<split>`` or beside the JSON
(the full search order is in :mod:`yolostitch.data.coco_source`). Elsewhere, name the folder with a mapping in
place of the path: ``val: {json: annotations/instances_val2017.json, images: pictures/val}`` (also as an item of
a list). ``names`` (and ``nc``) may be left out when every split is a COCO JSON: the JSONs' categories give
them, in ascending category id (the class order of the labels read from them); JSONs whose categories differ
are an error.

The ``train`` and ``val`` sources must exist when the YAML is loaded (so a run fails before it makes any
folder); a missing ``test`` source is only logged, as stock YOLOv5 ignores ``test`` until it is used.

A ``generator`` key makes a built-in synthetic dataset: it is generated on first use (deterministically) into
``$YOLOSTITCH_DATASETS`` (default ``~/.cache/yolostitch/datasets``) unless ``path`` is absolute. The generator
writes only into a new or empty folder or one it made before (it leaves a marker file there), and when it
regenerates it deletes only its own files, so an absolute ``path`` naming a folder of other files is an error.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..errors import DataError
from ..models.config import PROJECT_ROOT
from ..resources import builtin_base, builtin_dir
from ..yaml_io import read_yaml_mapping
from .coco_source import CocoSource, coco_source

SPLITS = ("train", "val", "test")
REQUIRED_SPLITS = ("train", "val")  # their sources must exist at load time
SPLIT_KEYS = {"json", "images"}  # a split given as a mapping: a COCO JSON and its image folder

logger = logging.getLogger(__name__)


class DataConfigError(DataError):
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
    label_nc: int | None = None  # set by single_class(): the class count the label files are checked against

    @property
    def nc(self) -> int:
        return len(self.names)

    def split(self, name: str, purpose: str = "") -> list[Path]:
        """The sources of split ``name``; a :class:`DataConfigError` naming the YAML if it has none (a YAML may
        leave out 'train' or 'val', e.g. one only validated on; ``purpose`` says what needs it)."""
        if name not in self.splits:
            raise DataConfigError(f"{self.source}: no '{name}' split (it has {sorted(self.splits)})"
                                  + (f", needed {purpose}" if purpose else ""))
        return self.splits[name]

    def val_sources(self) -> list[Path]:
        """What training validates on: the 'val' split, else (saying so) the 'train' split, as stock YOLOv5."""
        if "val" in self.splits:
            return self.splits["val"]
        logger.info("%s has no 'val' split: validating on the 'train' split", self.source)
        return self.split("train", "to validate on when there is no 'val' split")

    def single_class(self) -> DataConfig:
        """Stock's ``--single-cls``: every instance is class 0, named ``item`` (a one-class dataset keeps its
        name); the label files are still checked against the data's own class count."""
        names = dict(self.names) if self.nc == 1 else {0: "item"}
        return replace(self, names=names, label_nc=self.label_nc or self.nc)


def data_yaml_dirs() -> list[Path]:
    """Where named data YAMLs (and, under ``hyps/``, hyperparameter YAMLs) are looked up: the installed
    package's copy, else the repository's ``data/`` (:mod:`yolostitch.resources`)."""
    return [builtin_dir("data")]


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
        # built-in YAMLs use stock's convention: relative paths start at the project root (the current
        # directory when yolostitch is installed rather than checked out)
        source = str(path)
        builtin = path.resolve().parent in [d.resolve() for d in data_yaml_dirs()]
        base = builtin_base() if builtin else path.parent
    names = _names(raw, source)
    kpt_shape = _kpt_shape(raw, source)
    flip_idx = raw.get("flip_idx")
    if flip_idx is not None and (not kpt_shape or sorted(flip_idx) != list(range(kpt_shape[0]))):
        raise DataConfigError(f"{source}: flip_idx must be a permutation of range(K) for kpt_shape {kpt_shape}, "
                              f"got {flip_idx}")
    root = _generated_root(raw, source) if raw.get("generator") else _root(raw.get("path"), base)
    splits = {split: _split_sources(raw[split], split, root, source) for split in SPLITS if raw.get(split)}
    if "train" not in splits and "val" not in splits:
        raise DataConfigError(f"{source}: needs at least one of 'train' or 'val'")
    _check_sources_exist(splits, root, source)
    if names is None:
        names = _names_from_coco(splits, raw, source)
    if kpt_shape is None or (flip_idx is None and kpt_shape[0] > 1) or "skeleton" not in raw:
        derived = _keypoints_from_coco(splits, kpt_shape, flip_idx, source)
        if derived[:2] != (kpt_shape, flip_idx) or (derived[2] and "skeleton" not in raw):
            kpt_shape, flip_idx = derived[:2]
            raw = {**raw, "kpt_shape": kpt_shape, "flip_idx": flip_idx}  # tasks read their options from raw
            if derived[2] and "skeleton" not in raw:
                raw["skeleton"] = derived[2]  # drawn by detect.py (the trainer keeps it with the weights)
    return DataConfig(root, splits, names, kpt_shape, flip_idx, source, raw)


def _split_sources(value: Any, split: str, root: Path, source: str) -> list[Path]:
    """A split's YAML value -> its sources: folders, .txt lists, and COCO JSONs as :class:`CocoSource`."""
    def resolve(item: Any, key: str) -> Path:
        if not isinstance(item, (str, Path)) or not str(item):
            raise DataConfigError(f"{source}: '{key}' must be a path (a folder, a .txt list or a COCO .json), "
                                  f"got {item!r:.80}")
        p = Path(str(item)).expanduser()
        return p if p.is_absolute() else root / p

    out: list[Path] = []
    for item in value if isinstance(value, list) else [value]:
        if isinstance(item, dict):
            unknown = sorted(map(str, set(item) - SPLIT_KEYS))
            if unknown or "json" not in item:
                raise DataConfigError(f"{source}: '{split}' given as a mapping takes 'json' (a COCO file) and "
                                      "optionally 'images' (the folder of its images), "
                                      f"got keys {sorted(map(str, item))}")
            json_path = resolve(item["json"], f"{split}.json")
            if json_path.suffix.lower() != ".json":
                raise DataConfigError(f"{source}: '{split}.json' must be a COCO .json file, got {item['json']!r}")
            images = resolve(item["images"], f"{split}.images") if item.get("images") is not None else None
            out.append(coco_source(json_path, images, root))
        else:
            p = resolve(item, split)
            out.append(coco_source(p, None, root) if p.suffix.lower() == ".json" else p)
    return out


def _check_sources_exist(splits: dict[str, list[Path]], root: Path, source: str) -> None:
    """Fail on a train/val source that does not exist (a typo), naming the YAML, the key and the path tried."""
    for split, sources in splits.items():
        for p in sources:
            tried = [(split, p)]
            if isinstance(p, CocoSource) and p.images is not None:
                tried.append((f"{split}.images", p.images))
            for key, path in tried:
                if path.exists():
                    continue
                message = (f"{source}: '{key}' path {path} not found (relative paths start at the dataset root "
                           f"{root}, from 'path')")
                if split not in REQUIRED_SPLITS:
                    logger.warning("%s; the '%s' split has no images until it is fixed", message, split)
                    continue
                raise DataConfigError(message)


def _names_from_coco(splits: dict[str, list[Path]], raw: dict[str, Any], source: str) -> dict[int, str]:
    """Class names of a YAML without 'names': its COCO JSONs' categories (all of them must agree)."""
    sources = [p for ps in splits.values() for p in ps]
    if not all(isinstance(p, CocoSource) for p in sources):
        if isinstance(raw.get("nc"), int):
            return {i: f"class{i}" for i in range(raw["nc"])}
        raise DataConfigError(f"{source}: needs 'names' (a list or a dict of class index -> name); it may be "
                              "left out only when every split is a COCO .json, whose categories give the names")
    from .coco import coco_names

    first: tuple[Path, dict[int, str]] | None = None
    for p in dict.fromkeys(sources):  # each JSON once
        if not p.is_file():
            continue  # a missing test split (already logged)
        try:
            names = coco_names(p)
        except DataError:
            raise  # names the JSON and its fault
        except (OSError, ValueError) as e:
            raise DataConfigError(f"{source}: no 'names', and the categories of {p} cannot be read: {e}") from None
        if not names:
            raise DataConfigError(f"{source}: no 'names', and {p} has no usable 'categories' to take them from")
        if first is None:
            first = (p, names)
        elif names != first[1]:
            raise DataConfigError(f"{source}: no 'names', and the COCO JSONs disagree on the classes: {first[0]} has "
                                  f"{_listed(first[1])}, {p} has {_listed(names)} (categories in ascending id); "
                                  "give 'names' or use JSONs with the same categories")
    if first is None:
        raise DataConfigError(f"{source}: no 'names' and no COCO JSON to take them from")
    names = first[1]
    nc = raw.get("nc")
    if nc is not None and nc != len(names):
        raise DataConfigError(f"{source}: nc is {nc} but the categories of {first[0]} give {len(names)} classes")
    logger.debug("%s: class names from %s: %s", source, first[0], list(names.values()))
    return names


def _keypoints_from_coco(splits: dict[str, list[Path]], kpt_shape: list[int] | None, flip_idx: list[int] | None,
                         source: str) -> tuple[list[int] | None, list[int] | None, list[list[int]] | None]:
    """What a YAML leaves out, from its COCO JSONs' keypoint categories: ``kpt_shape`` [K, 3] (COCO keypoints are
    x, y, visibility), ``flip_idx`` pairing each ``left*`` name with its ``right*`` one (a horizontal flip swaps
    them; without flip_idx training would not flip keypoint images at all), and the ``skeleton`` (0-based)."""
    from .coco import coco_keypoint_info

    jsons = [p for ps in splits.values() for p in ps if isinstance(p, CocoSource) and p.is_file()]
    info = next((i for i in (coco_keypoint_info(p) for p in dict.fromkeys(jsons)) if i), None)
    if info is None:
        return kpt_shape, flip_idx, None
    names, skeleton = info
    if kpt_shape is None:
        kpt_shape = [len(names), 3]
        logger.info("%s: kpt_shape %s from the COCO keypoint names (%s, ...)", source, kpt_shape, ", ".join(names[:3]))
    if flip_idx is None and kpt_shape[0] == len(names):
        flip_idx = mirrored_pairs(names)
        if flip_idx is not None:
            logger.info("%s: flip_idx %s from the COCO keypoint names (left <-> right)", source, flip_idx)
    return kpt_shape, flip_idx, skeleton if kpt_shape[0] == len(names) else None


def mirrored_pairs(names: list[str]) -> list[int] | None:
    """``flip_idx`` from keypoint names: each name with ``left`` and ``right`` swapped (``left_eye`` <->
    ``right_eye``; a name with neither maps to itself); None if a mirrored name is missing or repeated."""
    import re

    swap = {"left": "right", "right": "left", "Left": "Right", "Right": "Left", "LEFT": "RIGHT", "RIGHT": "LEFT"}
    index = {n: i for i, n in enumerate(names)}
    if len(index) != len(names):
        return None
    out = []
    for n in names:
        twin = re.sub(r"left|right|Left|Right|LEFT|RIGHT", lambda m: swap[m.group(0)], n)
        if twin not in index:
            return None
        out.append(index[twin])
    return out


def _names(raw: dict[str, Any], source: str) -> dict[int, str] | None:
    names = raw.get("names")
    if isinstance(names, list):
        names = dict(enumerate(names))
    elif isinstance(names, dict):
        try:
            names = {int(k): str(v) for k, v in names.items()}
        except (TypeError, ValueError):
            raise DataConfigError(f"{source}: 'names' keys must be class indices 0..nc-1") from None
    elif names is None:
        if raw.get("nc") is not None and not isinstance(raw.get("nc"), int):
            raise DataConfigError(f"{source}: nc must be an integer, got {raw['nc']!r:.40}")
        return None  # from the COCO JSONs, or class0.. for 'nc' alone: decided once the splits are known
    else:
        raise DataConfigError(f"{source}: 'names' must be a list or a dict of class index -> name, "
                              f"got {type(names).__name__}")
    if sorted(names) != list(range(len(names))):
        raise DataConfigError(f"{source}: 'names' must cover class indices 0..{len(names) - 1} exactly")
    nc = raw.get("nc")
    if nc is not None and nc != len(names):
        raise DataConfigError(f"{source}: nc is {nc} but {len(names)} names are given")
    return names


def _listed(names: dict[int, str], limit: int = 8) -> str:
    """'N classes [a, b, ...]' for messages."""
    shown = list(names.values())[:limit]
    return f"{len(names)} classes {shown}"[:-1] + (", ...]" if len(names) > limit else "]")


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
    except ValueError as e:  # bad argument values, or a 'path' holding files the generator did not write
        raise DataConfigError(f"{source}: generator (path {path}): {e}") from None
