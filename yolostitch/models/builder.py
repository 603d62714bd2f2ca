"""Turn the rows of a model config into layers, threading each layer's output :class:`Shape`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from .config import resolve_args
from .registry import ConfigError, Row, get_entry, registered_names
from .shape import Shape

MODEL_INPUT = -1  # absolute source index of the image given to the model


@dataclass
class Layer:
    """One built row: the module and how it is wired."""

    index: int
    sources: list[int]  # absolute indices; MODEL_INPUT for the model input
    single: bool  # the YAML wrote one source (the module gets a tensor, not a list)
    number: int
    module_name: str
    args: list[Any]  # as written in the YAML
    module: nn.Module
    shape: Shape | None  # None for layers whose output is not a feature map (heads)


def build_layers(config: dict[str, Any], source: str, in_channels: int) -> list[Layer]:
    """Build every row of ``config`` (backbone then head), checking wiring and shapes as it goes."""
    depth = config.get("depth_multiple", 1.0)
    rows = [("backbone", j, r) for j, r in enumerate(config["backbone"])]
    rows += [("head", j, r) for j, r in enumerate(config.get("head") or [])]
    input_shape = Shape(in_channels, 1)
    layers: list[Layer] = []
    for i, (section, j, (from_, number, name, raw_args)) in enumerate(rows):
        where = f"{source} {section}[{j}] (layer {i}) {[from_, number, name, raw_args]}"
        entry = get_entry(name)
        if entry is None:
            raise ConfigError(f"{where}: unknown module {name!r}. Register it with "
                              f"yolostitch.register_module, or use one of: {', '.join(registered_names())}")
        single = isinstance(from_, int)
        sources = [_absolute_source(f, i, where) for f in ([from_] if single else from_)]
        shapes = []
        for s in sources:
            shape = input_shape if s == MODEL_INPUT else layers[s].shape
            if shape is None:
                raise ConfigError(f"{where}: input layer {s} ({layers[s].module_name}) has no feature-map output")
            shapes.append(shape)
        n = max(round(number * depth), 1) if number > 1 else number
        args = resolve_args(raw_args, config, where, name, entry.strings)
        row = Row(i, sources, shapes, n, args, name, config, where)
        module, shape = _build_row(entry, row)
        layers.append(Layer(i, sources, single, n, name, raw_args, module, shape))
    return layers


def _build_row(entry, row: Row) -> tuple[nn.Module, Shape | None]:
    try:
        if entry.repeats_in_args or row.number == 1:
            return entry.builder(row)
        # repeat the module; each copy takes the previous copy's output shape
        modules, shape = [], row.input
        for _ in range(row.number):
            if shape is None:
                raise row.error(f"{row.module} cannot be repeated: it has no feature-map output")
            module, shape = entry.builder(Row(**{**row.__dict__, "inputs": [shape]}))
            modules.append(module)
        return nn.Sequential(*modules), shape
    except ConfigError:
        raise
    except Exception as e:  # a module's own check: still say which row it was
        raise row.error(f"{type(e).__name__}: {e}") from e


def _absolute_source(f: int, i: int, where: str) -> int:
    """Stock semantics: -1 is the previous layer (the model input for layer 0), -k is k layers back."""
    if f < 0:
        absolute = i + f
        if absolute == MODEL_INPUT:
            return MODEL_INPUT
        if absolute < 0:
            raise ConfigError(f"{where}: from={f} points before the first layer")
        return absolute
    if f >= i:
        raise ConfigError(f"{where}: from={f} must point to an earlier layer (0..{i - 1})")
    return f
