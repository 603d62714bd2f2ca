"""``--plugin``: user code that adds tasks, heads or blocks, loaded only when the user names it.

A plugin is a ``.py`` file or an importable module name; importing it runs its ``register_task`` /
``register_module`` decorators. Nothing else loads code: a checkpoint records the plugins it was trained with
(plain strings), and loading it without them fails with an error naming them.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
from pathlib import Path
from types import ModuleType
from typing import Sequence

from .errors import FlagError

LOGGER = logging.getLogger("yolostitch")
LOADED: list[str] = []  # the specs loaded in this process, in order (recorded in checkpoints)


def load_plugins(specs: Sequence[str]) -> list[ModuleType]:
    return [load_plugin(spec) for spec in specs]


def load_plugin(spec: str) -> ModuleType:
    """Import ``spec``: a path to a ``.py`` file, or a module name importable from ``sys.path``."""
    if spec.endswith(".py") or Path(spec).is_file():
        path = Path(spec)
        if not path.is_file():
            raise FlagError(f"--plugin {spec}: no such file")
        name = f"yolostitch_plugin_{path.stem}"
        if name in sys.modules and getattr(sys.modules[name], "__file__", None) == str(path.resolve()):
            module = sys.modules[name]
        else:
            loader_spec = importlib.util.spec_from_file_location(name, path.resolve())
            module = importlib.util.module_from_spec(loader_spec)
            sys.modules[name] = module
            try:
                loader_spec.loader.exec_module(module)
            except BaseException:
                sys.modules.pop(name, None)
                raise
    else:
        try:
            module = importlib.import_module(spec)
        except ModuleNotFoundError as e:
            raise FlagError(f"--plugin {spec}: neither a .py file nor an importable module ({e})") from None
    if spec not in LOADED:
        LOADED.append(spec)
    LOGGER.info("plugin %s loaded", spec)
    return module


def plugin_hint(plugins: Sequence[str]) -> str:
    """How to load what a checkpoint needs: ``--plugin a.py --plugin b``."""
    return " ".join(f"--plugin {p}" for p in plugins)
