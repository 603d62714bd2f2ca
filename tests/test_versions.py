"""Dependency versions: setup.py declares what the code imports, with the minimums the code needs; an older torch
is refused at import, another ultralytics gets one line naming the one needed."""

import ast
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

from yolostitch import _versions
from yolostitch.engine.metrics import average_precision

ROOT = Path(__file__).resolve().parents[1]
# imported by yolostitch but installed apart, on purpose (README): the stock reference, with --no-deps
INSTALLED_APART = {"yolov5"}


def setup_requirements() -> dict[str, list[str]]:
    """setup.py's install_requires and extras, read from its syntax tree (setup.py is never run)."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "setup")
    kw = {k.arg: k.value for k in call.keywords}
    out = {"install_requires": ast.literal_eval(kw["install_requires"])}
    out.update(ast.literal_eval(kw["extras_require"]))
    return out


def requirement(name: str, section: str = "install_requires") -> str:
    """The requirement line of distribution ``name`` (case-insensitive) in a section of setup.py."""
    lines = [r for r in setup_requirements()[section] if re.split(r"[<>=!~ \[;]", r)[0].lower() == name.lower()]
    assert lines, f"{name} not declared in setup.py {section}"
    return lines[0]


def third_party_imports() -> dict[str, list[str]]:
    """Top-level modules imported anywhere in yolostitch/ (at any depth, lazy imports included) -> files."""
    found: dict[str, list[str]] = {}
    for path in sorted((ROOT / "yolostitch").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top != "yolostitch":
                    found.setdefault(top, []).append(str(path.relative_to(ROOT)))
    return found


def test_every_imported_package_is_declared():
    declared = {re.split(r"[<>=!~ \[;]", r)[0].lower() for rs in setup_requirements().values() for r in rs}
    owners = metadata.packages_distributions()
    missing = {}
    for module, files in third_party_imports().items():
        dists = owners.get(module)
        assert dists, f"{module} (imported by {files[0]}) is not installed here: cannot check its distribution"
        if not any(d.lower() in declared or d.lower() in INSTALLED_APART for d in dists):
            missing[module] = (dists, files[0])
    assert not missing, f"imported but not declared in setup.py: {missing}"


def test_declared_minimums_are_the_ones_the_code_needs():
    torch_min = ".".join(map(str, _versions.TORCH_MIN))
    assert requirement("torch") == f"torch>={torch_min}"
    assert requirement("torchvision") == f"torchvision>={'.'.join(map(str, _versions.TORCHVISION_MIN))}"
    assert requirement("ultralytics") == f"ultralytics=={_versions.ULTRALYTICS}"
    import torch

    # what the code calls exists in the installed torch (whose release is at least the declared minimum)
    assert _versions.release(torch.__version__)[:2] >= _versions.TORCH_MIN
    assert hasattr(torch.serialization, "safe_globals") and hasattr(torch.amp, "GradScaler")


@pytest.mark.parametrize("version, ok", [
    ("2.5.1", False), ("2.5.1+cu121", False), ("1.13.1", False), ("2.6.0", True), ("2.6.0+cpu", True),
    ("2.10.0", True), ("2.14.1", True), ("3.0.0a0", True),
])
def test_torch_minimum(version, ok):
    if ok:
        _versions.check_torch(version)
    else:
        with pytest.raises(ImportError, match=rf"needs torch>=2\.6, but torch {re.escape(version)} is installed"):
            _versions.check_torch(version)


def test_import_refuses_an_old_torch():
    code = "import torch; torch.__version__ = '2.5.1'; import yolostitch"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert run.returncode != 0
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: yolostitch needs torch>=2.6, but torch 2.5.1 is installed"), run.stderr


def test_another_ultralytics_gets_one_line_naming_the_version_needed():
    code = ("import importlib.metadata as m; real = m.version\n"
            "m.version = lambda name: '8.3.0' if name == 'ultralytics' else real(name)\n"
            "import yolostitch; print('imported')")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert run.returncode == 0 and run.stdout.strip() == "imported", run.stderr
    lines = [line for line in run.stderr.splitlines() if "ultralytics" in line]
    assert lines == [f"yolostitch needs ultralytics=={_versions.ULTRALYTICS} (it builds on its internals), but "
                     f"ultralytics 8.3.0 is installed: pip install ultralytics=={_versions.ULTRALYTICS}"]
    assert _versions.ultralytics_mismatch(metadata.version("ultralytics")) is None  # the pinned one: silent


def test_average_precision_on_numpy_without_trapezoid(monkeypatch):
    """NumPy 1.x has np.trapz only (np.trapezoid came in 2.0): the metric falls back to it."""
    recall, precision = np.array([0.1, 0.4, 0.4, 0.8]), np.array([1.0, 0.8, 0.6, 0.5])
    expected = average_precision(recall, precision)

    def trapz(y, x):  # the trapezoidal rule, written out
        return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2))

    monkeypatch.delattr(np, "trapezoid")
    monkeypatch.setattr(np, "trapz", trapz, raising=False)
    assert average_precision(recall, precision) == pytest.approx(expected, abs=1e-12)
