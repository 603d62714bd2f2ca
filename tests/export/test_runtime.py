"""val.py and detect.py on files written by export.py (.onnx in onnxruntime, .torchscript): the same outputs,
metrics and label files as the .pt they came from, and clear errors for files that are not ours."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from yolostitch.models.shape import Shape

from yolostitch import build_model
from yolostitch.cli import main
from yolostitch.engine.detector import detect
from yolostitch.engine.validator import run_val
from yolostitch.errors import FlagError, SetupError, WeightsError
from yolostitch.export import export_weights
from yolostitch.export.runtime import ExportedModel, load_exported
from yolostitch.export.sessions import RUNTIME_MISSING
from yolostitch.models.config import load_model_config
from yolostitch.weights import load_model, save_checkpoint

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit deprecation notices

IMGSZ = 64
TOL = 0.002  # metrics: exported vs .pt


def multitask_cls_model():
    """Every branch on one backbone: boxes, masks, keypoints (5 x 3) and image-level classes."""
    config, _ = load_model_config("yolov5n-multitask.yaml")
    config["head"] = config["head"] + [[[23], 1, "Classify", ["nc"]]]
    model = build_model(config, nc=5, kpt_shape=[5, 3])
    model.names = {0: "circle", 1: "triangle", 2: "square", 3: "star", 4: "hexagon"}
    return model


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The multi-task model as .pt, dynamic .onnx and .torchscript (one folder), and a fixed-shape batch-2 .onnx."""
    folder = tmp_path_factory.mktemp("exported")
    weights = save_checkpoint(folder / "mt.pt", multitask_cls_model())
    export_weights(weights, ["onnx", "torchscript"], imgsz=IMGSZ, dynamic=True)
    fixed = folder / "fixed"
    fixed.mkdir()
    fixed_weights = save_checkpoint(fixed / "mt.pt", load_model(weights))
    export_weights(fixed_weights, ["onnx"], imgsz=IMGSZ, batch_size=2)
    return weights, folder / "mt.onnx", folder / "mt.torchscript", fixed / "mt.onnx"


def metrics(weights, data, tmp_path, name, **kw):
    """Every branch's metrics (the untrained model's raw outputs are compared in the test above; its near-equal
    scores make per-prediction comparisons a matter of ties, so real boxes are compared on coco128 below)."""
    m = run_val(weights, data, imgsz=IMGSZ, batch_size=2, workers=0, project=tmp_path, name=name, verbose=False,
                save_json=True, amp="off", **kw)
    assert isinstance(json.loads((Path(m["save_dir"]) / "predictions.json").read_text()), list)
    return {k: v for k, v in m.items() if isinstance(v, float)}


def test_the_runtime_model_mirrors_the_pt(exported):
    weights, onnx_path, ts_path, _ = exported
    pt = load_model(weights)
    x = torch.rand(3, 3, IMGSZ, IMGSZ + 32)  # another batch and width than exported: dynamic axes
    with torch.no_grad():
        reference = pt(x)
    for path in (onnx_path, ts_path):
        model = ExportedModel(path)
        assert model.names == pt.names and model.nc == 5 and model.kpt_shape == [5, 3] and model.dynamic
        assert model.stride.tolist() == [8, 16, 32] and list(model.heads) == ["det", "seg", "kpt", "cls"]
        out = model(x)  # the same declared output types as the .pt's eval outputs
        assert type(out["det"]) is type(reference["det"]) and type(out["seg"]) is type(reference["seg"])
        assert torch.allclose(out["det"].rows, reference["det"].rows, atol=1e-3)
        assert torch.allclose(out["seg"].coefficients, reference["seg"].coefficients, atol=1e-4)
        assert torch.allclose(out["seg"].protos, reference["seg"].protos, atol=1e-4)
        assert torch.allclose(out["kpt"].rows, reference["kpt"].rows, atol=1e-3)
        assert torch.allclose(out["cls"], reference["cls"], atol=1e-5)


def test_torchscript_file_records_no_device(exported):
    """A traced graph keeps any device an op was given as a constant; the file exported on this CPU must carry
    none, or it would fail on a GPU (`--device 0`) with a device mismatch."""
    _, _, ts_path, _ = exported
    graph = str(torch.jit.load(str(ts_path), map_location="cpu").inlined_graph)
    assert "Device = prim::Constant" not in graph


def test_val_of_exported_files_matches_the_pt_on_every_branch(exported, tiny_shapes, tmp_path):
    weights, onnx_path, ts_path, _ = exported
    reference = metrics(weights, tiny_shapes, tmp_path, "pt")
    assert {"box_map", "mask_map", "pose_map", "cls_accuracy"} <= set(reference)
    for path in (onnx_path, ts_path):
        got = metrics(path, tiny_shapes, tmp_path, path.suffix[1:])
        assert set(got) == set(reference)
        for key, value in reference.items():
            assert abs(got[key] - value) <= TOL, (path.name, key, got[key], value)


def test_fixed_shape_graph_square_batches_and_padding(exported, tiny_shapes, tmp_path):
    weights, _, _, fixed = exported
    model, pt = ExportedModel(fixed), load_model(weights)
    assert not model.dynamic and model.batch_size == 2 and model.fixed_shape
    x = torch.rand(3, 3, IMGSZ, IMGSZ)  # 3 images through a batch-2 graph: two runs, the last one padded
    with torch.no_grad():
        reference = pt(x)
    out = model(x)
    assert out["det"].rows.shape == reference["det"].rows.shape
    assert torch.allclose(out["det"].rows, reference["det"].rows, atol=1e-3)
    # a narrower image (detect.py's stride-multiple letterbox) is padded bottom-right: prototypes cropped back
    narrow = model(torch.rand(1, 3, IMGSZ, IMGSZ - 32))
    assert narrow["seg"][1].shape == (1, 32, IMGSZ // 4, (IMGSZ - 32) // 4)
    with pytest.raises(FlagError, match=r"exported for 64x64 images \(fixed shape\), got 96x64: run with --imgsz 64"):
        model(torch.rand(1, 3, IMGSZ + 32, IMGSZ))
    # val.py letterboxes square at the export size, as stock does for exported models
    got = metrics(fixed, tiny_shapes, tmp_path, "fixed")
    assert {"box_map", "mask_map", "pose_map", "cls_accuracy"} <= set(got)


def detect_labels(weights, source, tmp_path, name, imgsz):
    """detect.py's --save-txt --save-conf rows per image file."""
    assert main(["detect", "--weights", str(weights), "--source", str(source), "--imgsz", str(imgsz),
                 "--save-txt", "--save-conf", "--nosave", "--amp", "off", "--project", str(tmp_path / "runs"),
                 "--name", name]) == 0
    return {f.name: np.loadtxt(f, ndmin=2) for f in sorted((tmp_path / "runs" / name / "labels").glob("*.txt"))}


def test_detect_runs_exported_files_on_every_branch(exported, tmp_path):
    weights, onnx_path, ts_path, fixed = exported
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for name, (h, w) in {"a.jpg": (64, 64), "b.png": (48, 64), "c.jpg": (64, 40)}.items():
        cv2.imwrite(str(images / name), rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
    for path, name in ((onnx_path, "onnx"), (ts_path, "ts"), (fixed, "fixed")):
        results = detect(path, images, imgsz=IMGSZ, conf_thres=0.001, amp="off")
        assert len(results) == 3 and all({"boxes", "masks", "keypoints", "image_classes"} <= set(r) for r in results)
        assert [r["masks"].shape[1:] for r in results] == [(64, 64), (48, 64), (64, 40)]


def test_feature_input_model_from_a_cache(tiny_shapes, tmp_path):
    """A FeatureInput model on an extract.py cache: .onnx (dynamic and fixed) validate as its .pt."""
    backbone = save_checkpoint(tmp_path / "backbone.pt", build_model("yolov5n.yaml", nc=5))
    cache = tmp_path / "cache"
    assert main(["extract", "--extractor", f"ckpt:{backbone}", "--data", str(tiny_shapes), "--imgsz", str(IMGSZ),
                 "--out", str(cache), "--workers", "0", "--batch-size", "4"]) == 0
    config, _ = load_model_config("yolov5n-feat.yaml")
    for row, (key, c, s) in zip(config["backbone"], (("model.4", 64, 8), ("model.6", 128, 16), ("model.9", 256, 32))):
        row[3][:3] = [key, c, s]
    weights = save_checkpoint(tmp_path / "feat.pt", build_model(config, nc=5))
    export_weights(weights, ["onnx"], imgsz=IMGSZ, dynamic=True)
    fixed = tmp_path / "fixed"
    fixed.mkdir()
    export_weights(save_checkpoint(fixed / "feat.pt", load_model(weights)), ["onnx"], imgsz=IMGSZ)
    reference = metrics(weights, tiny_shapes, tmp_path, "pt", features=str(cache))
    for path in (tmp_path / "feat.onnx", fixed / "feat.onnx"):  # the cache is square: the fixed graph fits it
        got = metrics(path, tiny_shapes, tmp_path, "onnx", features=str(cache))
        assert set(got) == set(reference) and all(abs(got[k] - v) <= TOL for k, v in reference.items())
    assert ExportedModel(fixed / "feat.onnx").feature_contract() == {
        "model.4": Shape(64, 8), "model.6": Shape(128, 16), "model.9": Shape(256, 32)}


def test_dnn_runs_onnx_files_in_opencv_as_onnxruntime_does(exported, tiny_shapes, tmp_path, capsys):
    """Stock's --dnn: the dynamic and the fixed-shape .onnx in OpenCV DNN give onnxruntime's metrics on every
    branch; detect.py says which engine ran; anything but an .onnx file is refused with the flag named."""
    weights, onnx_path, ts_path, fixed = exported
    for path in (onnx_path, fixed):
        reference = metrics(path, tiny_shapes, tmp_path, "ort")
        got = metrics(path, tiny_shapes, tmp_path, "dnn", dnn=True)
        assert {"box_map", "mask_map", "pose_map", "cls_accuracy"} <= set(got) and set(got) == set(reference)
        for key, value in reference.items():
            assert abs(got[key] - value) <= TOL, (path.name, key, got[key], value)
    model, precision = load_exported(onnx_path, torch.device("cpu"), dnn=True)
    assert type(model.runner).__name__ == "OpenCVRunner" and "OpenCV DNN" in precision.describe()
    image = tmp_path / "a.jpg"
    cv2.imwrite(str(image), np.random.default_rng(0).integers(0, 255, (64, 48, 3), dtype=np.uint8))
    base = ["detect", "--source", str(image), "--imgsz", str(IMGSZ), "--nosave", "--project", str(tmp_path / "d")]
    assert main(base + ["--weights", str(onnx_path), "--dnn"]) == 0
    assert "Precision: fp32 (OpenCV DNN runs the exported fp32 graph" in capsys.readouterr().out
    for path in (weights, ts_path):
        assert main(base + ["--weights", str(path), "--dnn"]) == 2
        assert f"--dnn runs .onnx files in OpenCV DNN; {path.name} is not one" in capsys.readouterr().err
    with pytest.raises(FlagError, match="--dnn runs .onnx files"):
        run_val(weights, tiny_shapes, imgsz=IMGSZ, dnn=True)


def test_amp_with_onnx_is_fp32_and_says_so(exported, caplog):
    from yolostitch.engine.precision import Precision

    _, onnx_path, ts_path, _ = exported
    bf16 = Precision("cpu", torch.bfloat16, channels_last=True, reason="CPU with native bf16")
    with caplog.at_level(logging.WARNING):
        _, precision = load_exported(onnx_path, torch.device("cpu"), bf16)
    assert not precision.enabled and precision.describe().startswith("fp32 (ONNX Runtime runs the exported fp32")
    assert sum("runs in fp32" in r.getMessage() and "--amp" in r.getMessage() for r in caplog.records) == 1
    _, precision = load_exported(ts_path, torch.device("cpu"), bf16)
    assert precision == bf16  # TorchScript runs under autocast as the .pt does


def test_files_not_written_by_us_are_refused(tmp_path, tiny_shapes, capsys, monkeypatch):
    plain = tmp_path / "plain.onnx"
    torch.onnx.export(torch.nn.Conv2d(3, 4, 3), (torch.rand(1, 3, 8, 8),), str(plain), dynamo=False)
    with pytest.raises(WeightsError, match="has no yolostitch metadata .*export the .pt with export.py"):
        ExportedModel(plain)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model")
    with pytest.raises(WeightsError, match="not an ONNX model onnxruntime can load"):
        ExportedModel(garbage)
    (tmp_path / "garbage.torchscript").write_bytes(b"not a model")
    with pytest.raises(WeightsError, match="not a TorchScript archive"):
        ExportedModel(tmp_path / "garbage.torchscript")
    script = tmp_path / "plain.torchscript"
    torch.jit.save(torch.jit.trace(torch.nn.Conv2d(3, 4, 3), torch.rand(1, 3, 8, 8)), str(script))
    with pytest.raises(WeightsError, match="has no yolostitch metadata"):
        ExportedModel(script)
    assert main(["val", "--weights", str(plain), "--data", str(tiny_shapes), "--imgsz", str(IMGSZ)]) == 2
    assert "has no yolostitch metadata" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed
    with pytest.raises(SetupError, match=r"pip install yolostitch\[export\]"):
        ExportedModel(plain)
    assert "yolostitch[export]" in RUNTIME_MISSING


def test_yolov5n_exports_match_the_pt_on_coco128(coco128_yolov5n, tmp_path):
    """val.py on the stock yolov5n.pt and on its dynamic .onnx / .torchscript: the same mAP (16 coco128 images)."""
    images, data, weights = coco128_yolov5n
    export_weights(weights, ["onnx", "torchscript"], imgsz=640, dynamic=True)
    runs = {}
    for path in (weights, tmp_path / "yolov5n.onnx", tmp_path / "yolov5n.torchscript"):
        runs[path.suffix] = run_val(path, data, imgsz=640, batch_size=8, workers=0, project=tmp_path / "runs",
                                    verbose=False, amp="off")
    assert runs[".pt"]["images"] == 16 and runs[".pt"]["box_map50"] > 0.3
    for suffix in (".onnx", ".torchscript"):
        for key in ("box_map50", "box_map"):
            assert abs(runs[suffix][key] - runs[".pt"][key]) <= TOL, (suffix, key)
    # detect.py writes the .pt's boxes (class, x y w h normalised, confidence) from the .onnx
    source = tmp_path / "two"
    source.mkdir()
    for image in images[:2]:
        (source / image.name).symlink_to(image)
    pt_labels = detect_labels(weights, source, tmp_path, "pt", 640)
    onnx_labels = detect_labels(tmp_path / "yolov5n.onnx", source, tmp_path, "onnx", 640)
    assert pt_labels.keys() == onnx_labels.keys() and sum(len(v) for v in pt_labels.values()) > 0
    for file, rows in pt_labels.items():
        assert onnx_labels[file].shape == rows.shape and np.allclose(onnx_labels[file], rows, atol=1e-3), file
