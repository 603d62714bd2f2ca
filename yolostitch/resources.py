"""Where the built-in model, data and hyperparameter YAMLs are found, however yolostitch is installed.

The repository keeps them at its top level (``models/yaml``, ``data/*.yaml``, ``data/hyps``): the source of
truth, which a source checkout and an editable install (``pip install -e .``) read in place. A built package
(a wheel, ``pip install .``, ``pip install --user .``) carries copies inside the package, in
``yolostitch/_builtin/`` with the same layout (setup.py's build step copies them there), read through
``importlib.resources``, so the package finds them wherever it was installed.
"""

from __future__ import annotations

import logging
from importlib import resources
from pathlib import Path

LOGGER = logging.getLogger("yolostitch")
PROJECT_ROOT = Path(__file__).resolve().parents[1]  # the repository, in a source checkout
PACKAGED = "_builtin"  # the copies' folder inside the installed package
# what the build copies: folder (relative to the repository and to the packaged copy) -> file pattern
BUILTIN_FILES = {"models/yaml": "*.yaml", "data": "*.yaml", "data/hyps": "*.yaml"}


def source_checkout() -> bool:
    """yolostitch runs from the repository (a checkout or an editable install): its folders are the truth,
    even if a stray build left copies inside the package."""
    return (PROJECT_ROOT / "setup.py").is_file() and (PROJECT_ROOT / "models" / "yaml").is_dir()


def packaged_root() -> Path | None:
    """The installed package's folder of built-in YAMLs, or None (a source checkout or editable install)."""
    if source_checkout():
        return None
    try:
        root = resources.files("yolostitch") / PACKAGED
    except (ModuleNotFoundError, TypeError):  # pragma: no cover - the package is always importable here
        return None
    if not isinstance(root, Path):  # e.g. a zip import: yolostitch reads its YAMLs as plain files
        LOGGER.debug("yolostitch resources are not plain files (%s): built-in YAMLs not used", type(root).__name__)
        return None
    return root if root.is_dir() else None


def builtin_dir(folder: str) -> Path:
    """One folder of built-in YAMLs (``'models/yaml'``, ``'data'`` or ``'data/hyps'``): the installed package's
    copy if there is one, else the repository's."""
    if folder not in BUILTIN_FILES:
        raise ValueError(f"unknown built-in folder {folder!r}; known: {sorted(BUILTIN_FILES)}")
    packaged = packaged_root()
    return packaged / folder if packaged is not None else PROJECT_ROOT / folder


def builtin_base() -> Path:
    """Where relative paths in the built-in data YAMLs start (stock's convention: the project folder, e.g.
    coco128.yaml's ``../datasets/coco128``): the repository in a source checkout, else the current directory."""
    return Path.cwd() if packaged_root() is not None else PROJECT_ROOT
