"""Built-in YAMLs are found in every kind of install: the repository's folders in a checkout (and an editable
install), the copies inside the package in a built one (wheel, ``pip install [--user] .``)."""

import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from yolostitch import resources
from yolostitch.data.config import find_data_yaml
from yolostitch.engine.trainer import load_hyp
from yolostitch.models.config import find_model_yaml

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"models/yaml": "*.yaml", "data": "*.yaml", "data/hyps": "*.yaml"}  # what the repository ships


def repo_files() -> dict[str, bytes]:
    return {f"{folder}/{p.name}": p.read_bytes() for folder, pattern in FOLDERS.items()
            for p in sorted((ROOT / folder).glob(pattern))}


def test_checkout_reads_the_repository_folders():
    assert resources.BUILTIN_FILES == FOLDERS
    assert resources.packaged_root() is None  # no copies inside a source tree
    for p in (ROOT / "models" / "yaml").glob("*.yaml"):
        assert find_model_yaml(p.name) == ROOT / "models" / "yaml" / p.name
        assert find_model_yaml(p.stem) == ROOT / "models" / "yaml" / p.name
    for p in (ROOT / "data").glob("*.yaml"):
        assert find_data_yaml(p.name) == ROOT / "data" / p.name
    for p in (ROOT / "data" / "hyps").glob("*.yaml"):
        assert load_hyp(p.name) == load_hyp(str(p))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built (no network, no build isolation) from a copy of the files setup.py packages."""
    have_backend = importlib.util.find_spec("setuptools") and (
        importlib.util.find_spec("setuptools.command.bdist_wheel") or importlib.util.find_spec("wheel"))
    if not have_backend:
        pytest.skip("setuptools with bdist_wheel is needed to build a wheel without network access")
    src, out = tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("wheel")
    for name in ("setup.py", "pyproject.toml", "README.md", "MANIFEST.in"):
        shutil.copy(ROOT / name, src / name)
    for name in ("yolostitch", "models", "data"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    run = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                          "-q", "-w", str(out), str(src)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    (built,) = out.glob("yolostitch-*.whl")
    return built


def test_wheel_carries_every_builtin_yaml(wheel):
    with zipfile.ZipFile(wheel) as z:
        packaged = {n.removeprefix("yolostitch/_builtin/"): z.read(n) for n in z.namelist()
                    if n.startswith("yolostitch/_builtin/")}
    assert packaged == repo_files()


def test_installed_wheel_finds_them_from_another_directory(wheel, tmp_path):
    """The wheel unpacked as pip installs it (site-packages layout), imported first on the path, from a directory
    that is not the repository: named models, data YAMLs and hyps come from its own copies."""
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as z:
        z.extractall(site)
    code = ("import yolostitch, sys\n"
            "from yolostitch.models.config import find_model_yaml\n"
            "from yolostitch.data.config import find_data_yaml\n"
            "from yolostitch.engine.trainer import load_hyp\n"
            "from yolostitch import build_model\n"
            "print(yolostitch.__file__)\n"
            "print(find_model_yaml('yolov5s-multitask.yaml'))\n"
            "print(find_data_yaml('shapes.yaml'))\n"
            "print(len(load_hyp('hyp.scratch-low.yaml')))\n"
            "print(type(build_model('yolov5n-multitask.yaml')).__name__)\n")
    work = tmp_path / "elsewhere"
    work.mkdir()
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=work, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(site)})
    assert run.returncode == 0, run.stderr[-2000:]
    package, model, data, n_hyp, built = run.stdout.split("\n")[:5]
    copies = site / "yolostitch" / "_builtin"
    assert Path(package) == site / "yolostitch" / "__init__.py"  # the wheel's copy, not the checkout's
    assert Path(model) == copies / "models" / "yaml" / "yolov5s-multitask.yaml"
    assert Path(data) == copies / "data" / "shapes.yaml"
    assert int(n_hyp) == len(load_hyp("hyp.scratch-low.yaml")) and built == "StitchModel"
