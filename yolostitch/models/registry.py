"""Module registry: YAML names resolve here, never through ``eval``.

A registered entry is a *builder*: a function that takes the :class:`Row` being built (resolved args,
input shapes, the model's width scaling) and returns the module and the :class:`Shape` it produces.
Each module thus declares its own output shape, and the builder needs no hard-coded module sets.

Register a class that has a ``from_row`` classmethod, or a builder function::

    @register_module()
    class MyBlock(nn.Module):
        @classmethod
        def from_row(cls, row: Row) -> tuple[nn.Module, Shape]:
            c2 = row.width(row.args[0])
            return cls(row.input.channels, c2), row.input.scaled(c2)

A YAML argument that is a string must be a config name (``nc``, ``anchors``, ``kpt_shape``), ``None``/``True``/
``False`` or a number, unless the module declares that it takes strings there: ``strings={position: words}``
(a tuple of allowed words, or ``None`` for any plain word such as a feature key); a string key names an option
of a mapping argument (``{"norm": ("none", "layernorm")}``). Anything else is refused when the row is built.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Collection, Mapping, Optional, Union

from torch import nn

from ..errors import ConfigError  # noqa: F401  (defined with the other user-facing errors; imported from here)
from .shape import Shape


@dataclass
class Row:
    """One YAML row as a builder sees it."""

    index: int  # layer index in the model
    sources: list[int]  # absolute indices of the inputs (-1: the model input)
    inputs: list[Shape]  # shapes of those inputs, in order
    number: int  # repeats, already scaled by depth_multiple
    args: list[Any]  # args with allowed names ('nc', 'None', ...) resolved
    module: str  # the name as written in the YAML
    config: dict[str, Any] = field(repr=False)  # the whole model config (nc, anchors, multiples)
    where: str = ""  # human description of the row, for errors

    @property
    def input(self) -> Shape:
        """The single input's shape; an error if the row has several."""
        if len(self.inputs) != 1:
            raise self.error(f"{self.module} takes one input, got {len(self.inputs)} (from={self.sources})")
        return self.inputs[0]

    def width(self, channels: int) -> int:
        """Scale channels by width_multiple, rounded up to a multiple of 8 (stock YOLOv5 rule)."""
        return make_divisible(channels * self.config.get("width_multiple", 1.0), 8)

    def error(self, message: str) -> ConfigError:
        return ConfigError(f"{self.where}: {message}")

    def construct(self, cls: Callable[..., nn.Module], *args: Any) -> nn.Module:
        """Call ``cls(*args)``, turning a wrong argument count into an error that names the row."""
        try:
            inspect.signature(cls).bind(*args)
        except TypeError as e:
            raise self.error(f"{self.module} got arguments {list(args)} but its signature is "
                             f"{getattr(cls, '__name__', cls)}{inspect.signature(cls)} ({e})") from None
        except ValueError:  # no signature available (some builtins): let the call speak
            pass
        return cls(*args)


Built = tuple[nn.Module, "Shape | None"]
Builder = Callable[[Row], Built]


# where a module takes string arguments: YAML argument position (or option name in a mapping argument) -> the
# allowed words, or None for any plain word
StringArgs = Mapping[Union[int, str], Optional[Collection[str]]]


@dataclass(frozen=True)
class Entry:
    builder: Builder
    repeats_in_args: bool  # the module consumes `number` itself (C3, C2f); else rows repeat it in a Sequential
    strings: StringArgs = field(default_factory=dict)  # the string arguments it takes (see the module doc)


_REGISTRY: dict[str, Entry] = {}


def register_module(name: str | None = None, *, repeats_in_args: bool = False, overwrite: bool = False,
                    strings: StringArgs | None = None):
    """Decorator registering a class with ``from_row`` or a builder function under ``name``; ``strings``
    declares the string arguments it takes (see the module doc)."""

    def deco(obj):
        key = name or obj.__name__
        if key in _REGISTRY and not overwrite:
            raise KeyError(f"module name {key!r} is already registered; pass overwrite=True to replace it")
        builder = obj.from_row if inspect.isclass(obj) else obj
        if not callable(builder):
            raise TypeError(f"{obj!r} is neither a builder function nor a class with a from_row classmethod")
        if any(isinstance(words, str) for words in (strings or {}).values()):
            raise TypeError(f"{key}: strings={strings!r} must map places to collections of words, not to a string")
        declared = {k: (None if words is None else tuple(words)) for k, words in (strings or {}).items()}
        _REGISTRY[key] = Entry(builder, repeats_in_args, declared)
        return obj

    return deco


def get_entry(name: str) -> Entry | None:
    return _REGISTRY.get(name)


def registered_names() -> list[str]:
    return sorted(_REGISTRY)


def make_divisible(x: float, divisor: int) -> int:
    """Smallest multiple of ``divisor`` that is >= x."""
    return int(math.ceil(x / divisor) * divisor)
