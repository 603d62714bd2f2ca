"""Which extractor specs run code, and when: kinds are told from the text alone, typos of a kind are errors (not
module imports), code kinds are refused unless allowed, and the weights hash is checked before a file is loaded."""

import hashlib
import importlib
import sys

import pytest
import torch
from torch import nn

from yolostitch import build_model
from yolostitch.extract import ExtractorSpecError, build_extractor, spec_kind
from yolostitch.models import FeatureContractError, Shape
from yolostitch.weights import save_checkpoint

JIT_DEPRECATED = pytest.mark.filterwarnings("ignore:`torch.jit.*is deprecated:FutureWarning")


def canary(folder, name, body="def maps(images):\n    return F.avg_pool2d(images, 8)\n"):
    """A module ``name`` in ``folder`` that leaves ``name.imported`` beside itself when it is imported."""
    source = folder / f"{name}.py"
    source.write_text("import pathlib\nimport torch.nn.functional as F\n"
                      "pathlib.Path(__file__).with_suffix('.imported').write_text('imported')\n" + body)
    return source, folder / f"{name}.imported"


@pytest.fixture()
def imports(monkeypatch):
    """Names given to importlib.import_module while the test runs."""
    seen = []
    real = importlib.import_module
    monkeypatch.setattr(importlib, "import_module", lambda name, *a: seen.append(name) or real(name, *a))
    return seen


@pytest.mark.parametrize("spec, near", [("torchvison:resnet18", "torchvision"), ("Timm:resnet18", "timm"),
                                        ("cpkt:yolov5n.pt", "ckpt"), ("TORCHSCRIPT:model.pt", "torchscript")])
def test_a_misspelt_kind_is_an_error_not_an_import(tmp_path, monkeypatch, imports, spec, near):
    source, marker = canary(tmp_path, spec.split(":")[0], "def resnet18(images):\n    return F.avg_pool2d(images, 8)\n")
    monkeypatch.syspath_prepend(str(tmp_path))  # a module of that very name could be imported: it must not be
    with pytest.raises(ExtractorSpecError, match=rf"unknown kind .*did you mean '{near}:'.*accepted extractor specs"):
        build_extractor(spec, imgsz=64)
    assert not marker.exists() and imports == [] and source.stem not in sys.modules


def test_a_module_that_does_not_exist_is_not_imported(imports):
    with pytest.raises(ExtractorSpecError, match="neither a known kind nor an importable module 'no_such_mod_x1'; "
                                                 "accepted extractor specs"):
        build_extractor("no_such_mod_x1:maps", imgsz=64)
    assert imports == []


def test_kinds_from_the_text_alone():
    assert [spec_kind(s) for s in ("torchvision:resnet18", "timm:resnet18:2,3", "ckpt:a.pt:4,6", "torchscript:a.pt",
                                   "feats:maps", "pkg.timmy:maps", "torchvision_ext:maps")] == \
        ["torchvision", "timm", "ckpt", "torchscript", "module:function", "module:function", "module:function"]
    for spec in ("resnet18", "has space:fn", "timm:", "./x.py:maps"):
        with pytest.raises(ExtractorSpecError, match="accepted extractor specs"):
            spec_kind(spec)


@JIT_DEPRECATED
def test_code_kinds_need_allow_code(tmp_path, monkeypatch):
    source, marker = canary(tmp_path, "trust_canary_a")
    monkeypatch.syspath_prepend(str(tmp_path))
    script = tmp_path / "pool.ts"
    torch.jit.script(nn.AvgPool2d(8)).save(str(script))
    monkeypatch.setattr(torch.jit, "load", lambda *a, **k: pytest.fail("torch.jit.load ran"))
    for spec in ("trust_canary_a:maps", f"torchscript:{script}"):
        with pytest.raises(ExtractorSpecError, match="runs code from outside yolostitch"):
            build_extractor(spec, imgsz=64, allow_code=False)
    assert not marker.exists() and "trust_canary_a" not in sys.modules
    try:  # the user's own choice runs
        assert build_extractor("trust_canary_a:maps", imgsz=64).contract() == {"out0": Shape(3, 8)}
        assert marker.exists()
    finally:
        sys.modules.pop("trust_canary_a", None)


@JIT_DEPRECATED
def test_the_weights_hash_is_checked_before_loading(tmp_path, monkeypatch):
    script = tmp_path / "pool.ts"
    torch.jit.script(nn.AvgPool2d(8)).save(str(script))
    right = hashlib.sha256(script.read_bytes()).hexdigest()[:16]
    assert build_extractor(f"torchscript:{script}", imgsz=64, expected_hash=right).weights_hash == right
    loads = []
    monkeypatch.setattr(torch.jit, "load", lambda *a, **k: loads.append(a))
    with pytest.raises(FeatureContractError, match=f"weights {right} differ from the 0123456789abcdef"):
        build_extractor(f"torchscript:{script}", imgsz=64, expected_hash="0123456789abcdef")
    assert loads == []  # the program was never loaded

    import yolostitch.weights

    path = save_checkpoint(tmp_path / "n.pt", build_model("yolov5n.yaml", nc=3))
    monkeypatch.setattr(yolostitch.weights, "load_model", lambda *a, **k: pytest.fail("the checkpoint was loaded"))
    with pytest.raises(FeatureContractError, match="differ from the 0123456789abcdef"):
        build_extractor(f"ckpt:{path}", imgsz=64, expected_hash="0123456789abcdef")


def test_untrained_torchvision_hash_is_checked():
    with pytest.raises(FeatureContractError, match="torchvision:resnet18: weights .* differ from the 0123456789abcdef"):
        build_extractor("torchvision:resnet18", imgsz=64, expected_hash="0123456789abcdef")
