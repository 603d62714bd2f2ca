"""export.py's stock options beyond the format: ``--half`` (fp16 graphs), ``--simplify`` (ONNX graph simplifier)
and a two-value ``--imgsz H W`` (non-square fixed graphs), and val.py / detect.py running what they write."""

from __future__ import annotations

import re
import sys

import cv2
import numpy as np
import pytest
import torch

from yolostitch import build_model
from yolostitch.cli import main
from yolostitch.engine.validator import run_val
from yolostitch.export import export_weights, read_metadata
from yolostitch.export.runtime import ExportedModel, load_exported
from yolostitch.models.config import load_model_config
from yolostitch.weights import load_model, save_checkpoint

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit deprecation notices

NAMES = {0: "circle", 1: "triangle", 2: "square", 3: "star", 4: "hexagon"}


@pytest.fixture(scope="module")
def multitask(tmp_path_factory):
    config, _ = load_model_config("yolov5n-multitask.yaml")
    model = build_model(config, nc=5, kpt_shape=[5, 3])
    model.names = dict(NAMES)
    return save_checkpoint(tmp_path_factory.mktemp("w") / "mt.pt", model)


def test_half_simplify_and_height_width_from_the_command(multitask, tmp_path, capsys):
    """One command: fp16, simplified, 64 x 96 fixed graphs; each file reproduces the fp32 .pt to fp16's precision,
    says what it is in its metadata, and detect.py runs it at ``--imgsz 64 96``."""
    weights = tmp_path / "mt.pt"
    weights.symlink_to(multitask)
    assert main(["export", "--weights", str(weights), "--include", "onnx", "torchscript", "--half", "--simplify",
                 "--imgsz", "64", "96"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == ["onnx", "torchscript"]
    assert "fp16, max diff against the fp32 model" in lines[0] and "simplified by onnxslim" in lines[0]
    assert re.search(r"simplified by onnxslim: (\d+) -> (\d+) nodes", lines[0])
    before, after = map(int, re.search(r"(\d+) -> (\d+) nodes", lines[0]).groups())
    assert after < before
    session = ort.InferenceSession(str(tmp_path / "mt.onnx"), providers=["CPUExecutionProvider"])
    assert [i.type for i in session.get_inputs()] == ["tensor(float16)"]
    assert list(session.get_inputs()[0].shape) == [1, 3, 64, 96]

    pt = load_model(weights)
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        reference = pt(x)
    for suffix in (".onnx", ".torchscript"):
        path = tmp_path / f"mt{suffix}"
        meta = read_metadata(path)
        assert meta["half"] is True and meta["imgsz"] == [64, 96]
        model, precision = load_exported(path, torch.device("cpu"))
        assert model.half and precision.describe().startswith("fp16 graph")
        with torch.no_grad():
            out = model(x)  # fp32 in and out; fp16 inside
        assert out["det"].rows.dtype == torch.float32
        rows, ref = out["det"].rows, reference["det"].rows
        assert float(((rows - ref).abs() / ref.abs().clamp(min=1)).max()) < 0.05, suffix
        assert torch.allclose(out["kpt"].rows, reference["kpt"].rows, rtol=0.05, atol=0.05)

    image = tmp_path / "wide.jpg"
    cv2.imwrite(str(image), np.random.default_rng(0).integers(0, 255, (60, 100, 3), dtype=np.uint8))
    base = ["detect", "--weights", str(tmp_path / "mt.onnx"), "--source", str(image), "--nosave",
            "--project", str(tmp_path / "runs")]
    assert main(base + ["--imgsz", "64", "96"]) == 0
    out = capsys.readouterr().out
    assert "at shape (1, 3, 64, 96)" in out and "Precision: fp16 graph" in out
    assert main(base + ["--imgsz", "128"]) == 2  # 77 x 128, padded to 96 x 128, does not fit: say what does
    err = capsys.readouterr().err
    assert "exported for 64x96 images (fixed shape), got 96x128: run with --imgsz 64 96 (detect.py" in err


def test_simplified_graph_validates_as_the_pt(multitask, tiny_shapes, tmp_path):
    """val.py on a simplified dynamic .onnx: every branch's metrics equal the .pt's (fp32: to 1e-4)."""
    weights = tmp_path / "mt.pt"
    weights.symlink_to(multitask)
    (result,) = export_weights(weights, ["onnx"], imgsz=64, dynamic=True, simplify=True)
    assert result.max_diff <= 1e-4 and "simplified by onnxslim" in result.note
    got, reference = ({k: v for k, v in run_val(w, tiny_shapes, imgsz=64, batch_size=2, workers=0,
                                                 project=tmp_path, verbose=False, amp="off").items()
                       if isinstance(v, float)} for w in (result.path, weights))
    assert {"box_map", "mask_map", "pose_map"} <= set(reference) and set(got) == set(reference)
    assert all(abs(got[k] - reference[k]) <= 1e-3 for k in reference), (got, reference)


def test_option_errors(multitask, tmp_path, capsys, monkeypatch):
    weights = tmp_path / "mt.pt"
    weights.symlink_to(multitask)
    base = ["export", "--weights", str(weights), "--imgsz", "64"]
    assert main(base + ["--half", "--int8"]) == 2
    assert "--half and --int8" in capsys.readouterr().err
    assert main(base + ["--include", "torchscript", "--simplify"]) == 2
    assert "--simplify simplifies the ONNX graph; --include torchscript writes none" in capsys.readouterr().err
    assert main(base[:-1] + ["64", "96", "128"]) == 2
    assert "--imgsz takes one value (square) or two (height width), got 3" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "onnxslim", None)  # as if neither simplifier were installed
    monkeypatch.setitem(sys.modules, "onnxsim", None)
    assert main(base + ["--simplify"]) == 2
    assert capsys.readouterr().err.strip() == ("yolostitch export: error: --simplify needs onnxslim (or stock's "
                                               "onnx-simplifier): pip install onnxslim")
    assert not (tmp_path / "mt.onnx").exists()


def test_yolov5n_half_validates_as_the_pt_on_coco128(coco128_yolov5n, tmp_path):
    """The official yolov5n.pt exported with --half --simplify: val.py's mAP on 16 coco128 images within 0.01 of
    the fp32 .pt's (fp16 moves scores in the third digit, so a few boxes swap ranks)."""
    _, data, weights = coco128_yolov5n
    (result,) = export_weights(weights, ["onnx"], imgsz=320, dynamic=True, half=True, simplify=True)
    assert ExportedModel(result.path).half
    runs = {path.suffix: run_val(path, data, imgsz=320, batch_size=8, workers=0, project=tmp_path / "runs",
                                 verbose=False, amp="off") for path in (weights, result.path)}
    assert runs[".pt"]["box_map50"] > 0.2
    for key in ("box_map50", "box_map"):
        assert abs(runs[".onnx"][key] - runs[".pt"][key]) <= 0.01, (key, runs[".onnx"][key], runs[".pt"][key])
