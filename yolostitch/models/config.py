"""Model YAMLs in the stock YOLOv5 schema: finding, safe loading, validation and argument resolution."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any, Collection, Mapping

from ..resources import builtin_dir
from ..yaml_io import read_yaml_mapping
from .registry import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# names a row's args may use for values of the model config; nothing else is ever evaluated
CONFIG_NAMES = ("nc", "anchors", "kpt_shape")
_LITERALS = {"None": None, "True": True, "False": False}
_PLAIN_STRING = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")  # a word where a module takes any (a feature key)


def model_yaml_dirs() -> list[Path]:
    """Where named model YAMLs are looked up: the installed package's copy, else the repository's
    ``models/yaml`` (:mod:`yolostitch.resources`)."""
    return [builtin_dir("models/yaml")]


def find_model_yaml(name: str | Path) -> Path:
    """A path as given, else a file of that name (``.yaml`` optional) under :func:`model_yaml_dirs`."""
    path = Path(name)
    if path.is_file():
        return path
    candidates = [path.name] if path.suffix in (".yaml", ".yml") else [f"{path.name}.yaml", path.name]
    for folder in model_yaml_dirs():
        for candidate in candidates:
            if (folder / candidate).is_file():
                return folder / candidate
    known = sorted({p.name for d in model_yaml_dirs() if d.is_dir() for p in d.glob("*.yaml")})
    raise FileNotFoundError(f"model config {str(name)!r} not found as a file nor among the built-in models: {known}")


def load_model_config(cfg: str | Path | dict[str, Any]) -> tuple[dict[str, Any], str]:
    """Return ``(config dict, source name)``; dicts are deep-copied, files read with ``yaml.safe_load``."""
    if isinstance(cfg, dict):
        config, source = copy.deepcopy(cfg), str(cfg.get("yaml_file", "<dict>"))
    else:
        path = find_model_yaml(cfg)
        config = read_yaml_mapping(path, ConfigError, "model config")
        source = str(path)
        config["yaml_file"] = path.name
    validate_model_config(config, source)
    return config, source


def validate_model_config(config: Any, source: str) -> None:
    """Check the schema's shape so later errors can assume it."""
    if not isinstance(config, dict):
        raise ConfigError(f"{source}: a model config must be a mapping, got {type(config).__name__}")
    if "backbone" not in config:
        raise ConfigError(f"{source}: missing 'backbone' (a list of [from, number, module, args] rows)")
    for key in ("depth_multiple", "width_multiple"):
        value = config.get(key, 1.0)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
            raise ConfigError(f"{source}: {key} must be a positive number, got {value!r}")
    nc = config.get("nc")
    if nc is not None and (not isinstance(nc, int) or isinstance(nc, bool) or nc < 1):
        raise ConfigError(f"{source}: nc must be a positive integer, got {nc!r}")
    for section in ("backbone", "head"):
        rows = config.get(section) or []
        if not isinstance(rows, list):
            raise ConfigError(f"{source}: '{section}' must be a list of rows, got {type(rows).__name__}")
        for j, row in enumerate(rows):
            where = f"{source} {section}[{j}] {row!r}"
            if not isinstance(row, list) or len(row) != 4:
                raise ConfigError(f"{where}: a row is [from, number, module, args] (4 items)")
            from_, number, module, args = row
            if not (_is_int(from_) or (isinstance(from_, list) and from_ and all(_is_int(f) for f in from_))):
                raise ConfigError(f"{where}: 'from' must be an int or a non-empty list of ints, got {from_!r}")
            if not _is_int(number) or number < 1:
                raise ConfigError(f"{where}: 'number' must be an int >= 1, got {number!r}")
            if not isinstance(module, str):
                raise ConfigError(f"{where}: 'module' must be a registered name (a string), got {module!r}")
            if not isinstance(args, list):
                raise ConfigError(f"{where}: 'args' must be a list, got {args!r}")
    if not (config.get("backbone") or []) and not (config.get("head") or []):
        raise ConfigError(f"{source}: no layers ('backbone' and 'head' are both empty)")


def resolve_args(args: list[Any], config: dict[str, Any], where: str, module: str,
                 strings: Mapping[int | str, Collection[str] | None] | None = None) -> list[Any]:
    """Resolve a row's arguments without evaluating anything.

    A string is a config name (``nc``, ``anchors``, ``kpt_shape``: its value), ``None``/``True``/``False``, a
    number, or a word the module declares it takes at that place (``strings``, as registered: argument position
    or option name -> the allowed words, or None for any plain word such as a feature key). Anything else is a
    :class:`ConfigError` naming the row (``where``), the module and the argument.
    """
    return [_resolve(value, config, where, module, strings or {}, position) for position, value in enumerate(args)]


def _resolve(value: Any, config: dict[str, Any], where: str, module: str,
             strings: Mapping[int | str, Collection[str] | None], place: int | str) -> Any:
    if isinstance(value, list):
        return [_resolve(v, config, where, module, strings, place) for v in value]
    if isinstance(value, dict):  # options: each value is checked against what the module takes for that option
        return {k: _resolve(v, config, where, module, strings, str(k)) for k, v in value.items()}
    if not isinstance(value, str):
        return value
    if value in CONFIG_NAMES:
        if value not in config:
            raise ConfigError(f"{where}: argument {value!r} refers to a config key the YAML does not set")
        return copy.deepcopy(config[value])
    if value in _LITERALS:
        return _LITERALS[value]
    for number_type in (int, float):
        try:
            return number_type(value)
        except ValueError:
            pass
    if place in strings:
        words = strings[place]
        if (words is None and _PLAIN_STRING.fullmatch(value)) or (words is not None and value in words):
            return value
        name = f"argument {place}" if isinstance(place, int) else place
        expected = "a plain word (letters, digits, '_', '.', '-')" if words is None else f"one of {list(words)}"
        raise ConfigError(f"{where}: {module} {name} {value!r} is not {expected} (nor a config name "
                          f"{list(CONFIG_NAMES)}, None/True/False or a number)")
    what = f"argument {place}" if isinstance(place, int) else f"option {place!r}"
    raise ConfigError(f"{where}: argument {value!r} is not allowed as {module}'s {what}: strings may only be "
                      f"{list(CONFIG_NAMES)}, None/True/False or numbers, and {_describe_strings(module, strings)} "
                      "(names and expressions are never evaluated)")


def _describe_strings(module: str, strings: Mapping[int | str, Collection[str] | None]) -> str:
    if not strings:
        return f"{module} takes no other string"
    places = [(f"argument {k}" if isinstance(k, int) else f"option {k!r}") +
              (" (a plain word)" if words is None else f" (one of {list(words)})") for k, words in strings.items()]
    return f"{module} takes other strings only as " + ", ".join(places)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)
