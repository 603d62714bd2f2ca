"""Export: ONNX and TorchScript files reproduce the PyTorch model, carry their metadata, and the CLI writes them.

Every check compares against the model's own forward (not only against the exporter's self-check), at 64 px.
"""

import json
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from yolostitch import build_model
from yolostitch.cli import main
from yolostitch.export import (ONNX_MISSING, ExportModule, export_onnx, export_torchscript, int8_report,
                               quantize_int8, read_metadata, verify_onnx)
from yolostitch.models.config import load_model_config
from yolostitch.weights import save_checkpoint

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

ROOT = Path(__file__).resolve().parents[2]
IMGSZ = 64
ROWS = 3 * (8 * 8 + 4 * 4 + 2 * 2)  # anchors x cells over strides 8, 16, 32 at 64 px


def run_onnx(path, feed):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session, dict(zip([o.name for o in session.get_outputs()],
                             session.run(None, {k: v.numpy() for k, v in feed.items()})))


def assert_close(reference, value, tol=1e-4):
    reference, value = reference.detach().float(), torch.as_tensor(value).float()
    assert reference.shape == value.shape
    assert float(((reference - value).abs() / reference.abs().clamp(min=1)).max()) <= tol


@pytest.fixture(scope="module")
def detector():
    return build_model("yolov5n.yaml", nc=3).eval()


@pytest.fixture(scope="module")
def detector_onnx(detector, tmp_path_factory):
    return export_onnx(detector, tmp_path_factory.mktemp("onnx") / "det.onnx", IMGSZ, dynamic=True)


def test_onnx_image_model_matches_torch(detector, detector_onnx):
    x = torch.rand(2, 3, IMGSZ, IMGSZ)  # batch 2 through a graph traced at batch 1: the dynamic axis works
    session, out = run_onnx(detector_onnx, {"images": x})
    assert [i.name for i in session.get_inputs()] == ["images"] and list(out) == ["det"]
    with torch.no_grad():
        assert_close(detector(x)["det"][0], out["det"])
    assert out["det"].shape == (2, ROWS, 5 + 3)
    meta = read_metadata(detector_onnx)
    assert meta["names"] == {"0": "class0", "1": "class1", "2": "class2"} and meta["stride"] == [8, 16, 32]
    assert meta["imgsz"] == [IMGSZ, IMGSZ] and meta["tasks"] == {"det": ["det"]} and meta["dynamic"] is True
    props = {p.key: p.value for p in onnx.load(str(detector_onnx)).metadata_props}
    assert json.loads(props["outputs"]) == ["det"] and json.loads(props["feature_contract"]) == {}
    # the caller's model is left as it was: not in export mode, still eval
    assert not detector.model[detector.heads["det"]].export and not detector.training


def test_verification_notices_a_different_model(detector, detector_onnx):
    changed = build_model("yolov5n.yaml", nc=3).eval()
    changed.load_state_dict(detector.state_dict())
    x = torch.rand(1, 3, IMGSZ, IMGSZ)
    assert verify_onnx(changed, detector_onnx, x) <= 1e-4
    with torch.no_grad():
        changed.model[changed.heads["det"]].m[0].bias += 1.0
    assert verify_onnx(changed, detector_onnx, x) > 1e-2


def test_onnx_feature_model_has_named_inputs(tmp_path):
    model = build_model("yolov5n-feat.yaml", nc=3).eval()
    path = export_onnx(model, tmp_path / "feat.onnx", IMGSZ)
    g = torch.Generator().manual_seed(3)
    feed = {"layer2": torch.randn(1, 128, 8, 8, generator=g), "layer3": torch.randn(1, 256, 4, 4, generator=g),
            "layer4": torch.randn(1, 512, 2, 2, generator=g)}
    session, out = run_onnx(path, feed)
    assert [(i.name, i.shape) for i in session.get_inputs()] == [
        ("layer2", [1, 128, 8, 8]), ("layer3", [1, 256, 4, 4]), ("layer4", [1, 512, 2, 2])]
    with torch.no_grad():
        assert_close(model(feed)["det"][0], out["det"])
    assert read_metadata(path)["feature_contract"] == {"layer2": {"channels": 128, "stride": 8},
                                                       "layer3": {"channels": 256, "stride": 16},
                                                       "layer4": {"channels": 512, "stride": 32}}


def test_a_model_reading_image_and_features_takes_images_first(tmp_path):
    config, _ = load_model_config("yolov5n.yaml")
    config["backbone"] = config["backbone"][:7] + [[-1, 1, "FeatureInput", ["p5", 96, 32, 1024]],
                                                   [-1, 1, "Identity", []], [-1, 1, "Identity", []]]
    model = build_model(config, nc=3).eval()
    path = export_onnx(model, tmp_path / "mixed.onnx", IMGSZ)
    feed = {"images": torch.rand(1, 3, IMGSZ, IMGSZ), "p5": torch.randn(1, 96, 2, 2)}
    session, out = run_onnx(path, feed)
    assert [i.name for i in session.get_inputs()] == ["images", "p5"]
    with torch.no_grad():
        assert_close(model({"image": feed["images"], "p5": feed["p5"]})["det"][0], out["det"])


def test_multitask_outputs(tmp_path):
    model = build_model("yolov5n-multitask.yaml", nc=3, kpt_shape=[5, 3]).eval()
    path = export_onnx(model, tmp_path / "mt.onnx", IMGSZ)
    x = torch.rand(1, 3, IMGSZ, IMGSZ)
    _, out = run_onnx(path, {"images": x})
    assert {k: v.shape for k, v in out.items()} == {"det": (1, ROWS, 8), "seg_coef": (1, ROWS, 32),
                                                    "seg_proto": (1, 32, IMGSZ // 4, IMGSZ // 4),
                                                    "kpt": (1, ROWS, 5 * 3)}
    with torch.no_grad():
        ref = model(x)
    assert_close(ref["det"][0], out["det"])
    assert_close(ref["seg"][0], out["seg_coef"])
    assert_close(ref["seg"][1], out["seg_proto"])
    assert_close(ref["kpt"][0], out["kpt"])
    meta = read_metadata(path)
    assert meta["kpt_shape"] == [5, 3] and meta["tasks"]["seg"] == ["seg_coef", "seg_proto"]


def test_classify_output_comes_last():
    module = ExportModule(build_model("yolov5n-cls.yaml", nc=3))
    outputs = module(*module.example_inputs(IMGSZ))
    assert module.output_names == ["det", "cls"]
    assert outputs[1].shape == (1, 3) and bool(((outputs[1] >= 0) & (outputs[1] <= 1)).all())


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_torchscript_round_trip(detector, tmp_path):
    path = export_torchscript(detector, tmp_path / "det.torchscript", IMGSZ)
    extra = {"config.json": ""}
    loaded = torch.jit.load(str(path), _extra_files=extra)
    meta = json.loads(extra["config.json"])
    assert meta["outputs"] == ["det"] and meta["inputs"] == ["images"] and meta["stride"] == [8, 16, 32]
    x = torch.rand(1, 3, IMGSZ, IMGSZ)
    with torch.no_grad():
        (det,) = loaded(x)
        assert_close(detector(x)["det"][0], det)


def test_int8_is_smaller_and_runs(detector_onnx):
    path = quantize_int8(detector_onnx)
    assert path.name == "det-int8.onnx" and path.stat().st_size < 0.5 * detector_onnx.stat().st_size
    _, out = run_onnx(path, {"images": torch.rand(2, 3, IMGSZ, IMGSZ)})
    assert out["det"].shape == (2, ROWS, 8) and np.isfinite(out["det"]).all()
    report = int8_report(detector_onnx, path, runs=2)
    assert report.size_ratio < 0.5 and report.latency_int8_ms > 0 and report.latency_fp32_ms > 0
    assert np.isfinite(report.max_diff) and "int8" in report.scheme


def test_bad_sizes_are_value_errors(detector, tmp_path):
    with pytest.raises(ValueError, match="multiple of the model's largest stride 32"):
        export_onnx(detector, tmp_path / "x.onnx", 100)
    with pytest.raises(ValueError, match="opset 99 is not supported"):
        export_onnx(detector, tmp_path / "x.onnx", IMGSZ, opset=99)
    assert not (tmp_path / "x.onnx").exists()


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    model = build_model("yolov5n.yaml", nc=3)
    model.names = {0: "circle", 1: "triangle", 2: "square"}
    return save_checkpoint(tmp_path_factory.mktemp("w") / "best.pt", model)


def test_export_command(weights, capsys):
    args = ["export", "--weights", str(weights), "--include", "onnx", "torchscript", "--imgsz", str(IMGSZ),
            "--dynamic", "--int8"]
    assert main(args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    folder = weights.parent
    assert [line.split(":")[0] for line in lines] == ["onnx", "torchscript", "onnx-int8"]
    for line, name in zip(lines, ("best.onnx", "best.torchscript", "best-int8.onnx")):
        assert (folder / name).is_file() and str(folder / name) in line and " MB), max diff " in line
    assert "CPU latency" in lines[2] and "fp32" in lines[2]
    assert read_metadata(folder / "best.onnx")["names"] == {"0": "circle", "1": "triangle", "2": "square"}


def test_user_errors_are_one_line(weights, tmp_path, capsys, monkeypatch):
    missing = tmp_path / "nowhere.pt"
    assert main(["export", "--weights", str(missing)]) == 2
    assert capsys.readouterr().err.strip() == f"yolostitch export: error: weights file not found: {missing}"
    assert main(["export", "--weights", str(weights), "--imgsz", "100"]) == 2
    assert "multiple of the model's largest stride 32" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed
    assert main(["export", "--weights", str(weights), "--imgsz", str(IMGSZ)]) == 2
    assert capsys.readouterr().err.strip() == f"yolostitch export: error: {ONNX_MISSING}"


def test_export_py_script(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["export.py", "--weights", str(tmp_path / "none.pt")])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_path(str(ROOT / "export.py"), run_name="__main__")
    assert exit_.value.code == 2
    assert "weights file not found" in capsys.readouterr().err
