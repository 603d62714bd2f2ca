"""Command-line entry points: ``yolostitch <command>`` and the top-level scripts."""

from .main import main

__all__ = ["main"]
