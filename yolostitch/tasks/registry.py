"""The task registry: task name (a head's ``task`` attribute) -> its :class:`~.base.Task` class.

One registry per extension point, filled by a decorator where each task is defined (detectron2's and timm's
pattern). Built-in tasks register on import of :mod:`yolostitch.tasks`; a plugin registers its own the same way::

    @register_task
    class Colour(Task):
        name = "colour"
"""

from __future__ import annotations

from typing import Callable, Iterator, TypeVar

from ..errors import ConfigError

T = TypeVar("T")


class Registry:
    """Named classes of one kind, in registration order (the order tasks run, print and export in)."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, type] = {}

    def register(self, cls: T) -> T:
        name = getattr(cls, "name", None)
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{cls.__name__}: a {self.kind} needs a non-empty string `name`")
        known = self._entries.get(name)
        if known is not None and known is not cls and known.__qualname__ != cls.__qualname__:
            raise ConfigError(f"{self.kind} {name!r} is already registered by {known.__module__}.{known.__qualname__}")
        self._entries[name] = cls
        return cls

    def get(self, name: str) -> type:
        if name not in self._entries:
            raise ConfigError(f"no {self.kind} named {name!r} is registered (known: {sorted(self._entries)}); "
                              "if a plugin defines it, pass that plugin with --plugin")
        return self._entries[name]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[type]:
        return iter(list(self._entries.values()))

    def names(self) -> list[str]:
        return list(self._entries)


TASKS = Registry("task")


def register_task(cls: T) -> T:
    """Class decorator: register a :class:`~.base.Task` under its ``name``."""
    return TASKS.register(cls)


def registered(method: str) -> Callable[..., list]:
    """Call ``method`` on every registered task class, in order; the non-None answers."""
    def call(*args, **kwargs) -> list:
        return [r for r in (getattr(cls, method)(*args, **kwargs) for cls in TASKS) if r is not None]
    return call
