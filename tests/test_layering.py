"""Which package may import which: read from the source (every import statement, at module level or inside a
function), so a lazy import that closes a cycle is caught too."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "yolostitch"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Absolute names of the yolostitch modules ``path`` imports (``from .x import y`` counts as ``pkg.x``)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                found.add(".".join(base + ([node.module] if node.module else [])))
            elif node.module:
                found.add(node.module)
    return {m for m in found if m == "yolostitch" or m.startswith("yolostitch.")}


def _graph() -> dict[str, set[str]]:
    return {_module_name(p): _imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def _importers(graph: dict[str, set[str]], importer: str, imported: str) -> list[str]:
    """``module -> target`` pairs where a module under ``importer`` imports one under ``imported``."""
    def under(name: str, prefix: str) -> bool:
        return name == prefix or name.startswith(prefix + ".")

    return [f"{m} -> {t}" for m, targets in graph.items() if under(m, importer)
            for t in sorted(targets) if under(t, imported)]


def test_the_graph_sees_relative_and_lazy_imports():
    graph = _graph()
    assert "yolostitch.weights.stock_checkpoint" in graph["yolostitch.weights"]  # from .stock_checkpoint import
    assert "yolostitch.run_stock.init_weights" in graph["yolostitch.run_stock.runner"]  # inside a function


def test_running_stock_does_not_import_compare():
    """compare runs stock YOLOv5 as one of its rows; stock's child process must not need compare back."""
    assert _importers(_graph(), "yolostitch.run_stock", "yolostitch.compare") == []


def test_inference_imports_no_loss_code():
    """Evaluation, prediction and export take their geometry from ``ops``, not from training's losses."""
    graph = _graph()
    inference = ["yolostitch.engine.predict", "yolostitch.engine.validator", "yolostitch.engine.metrics",
                 "yolostitch.engine.postprocess", "yolostitch.engine.detector", "yolostitch.engine.sources",
                 "yolostitch.engine.annotate", "yolostitch.engine.label_files", "yolostitch.engine.video",
                 "yolostitch.export"]
    assert [pair for m in inference for pair in _importers(graph, m, "yolostitch.losses")] == []


def test_data_and_engine_share_the_letterbox_through_ops():
    """The one letterbox lives in ``ops``, which data and engine both import: data never imports the engine, and
    ``ops`` imports neither (only ``errors``)."""
    graph = _graph()
    assert _importers(graph, "yolostitch.data", "yolostitch.engine") == []
    assert [p for p in _importers(graph, "yolostitch.ops", "yolostitch")
            if not p.split(" -> ")[1].startswith(("yolostitch.ops", "yolostitch.errors"))] == []
    assert "yolostitch.ops.letterbox" in graph["yolostitch.data.letterbox"]
    assert "yolostitch.ops.letterbox" in graph["yolostitch.engine.detector"]
