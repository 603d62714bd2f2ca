"""`yolostitch detect` / `detect.py`: stock-style flags, log lines and outputs, one-line user errors."""

import re
import runpy
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from yolostitch import build_model
from yolostitch.cli import main
from yolostitch.weights import save_checkpoint

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A multi-task model whose stride-32 anchor 0 detects a small 'star' on every cell, with a mask and
    visible keypoints (heads rigged through their biases)."""
    model = build_model("yolov5n-multitask.yaml", nc=5, kpt_shape=[5, 3])
    model.names = {0: "circle", 1: "triangle", 2: "square", 3: "star", 4: "hexagon"}
    det, seg, kpt = (model.model[model.heads[t]] for t in ("det", "seg", "kpt"))
    with torch.no_grad():
        for level, conv in enumerate(det.m):
            conv.weight.zero_()
            b = conv.bias.view(det.na, det.no)
            b.fill_(-20.0)
            if level == det.nl - 1:
                b[0, :4] = torch.tensor([0.0, 0.0, -1.5, -1.5])
                b[0, 4], b[0, 5 + 3] = 10.0, 10.0
        for conv in seg.m:
            conv.weight.zero_()
            conv.bias.fill_(1.0)
        seg.proto.cv3.conv.weight.zero_()
        seg.proto.cv3.bn.weight.zero_()
        seg.proto.cv3.bn.bias.fill_(5.0)
        for conv in kpt.m:
            conv.weight.zero_()
            conv.bias.view(kpt.na, 5, 3)[..., :2] = 0.5
            conv.bias.view(kpt.na, 5, 3)[..., 2] = 5.0
    return save_checkpoint(tmp_path_factory.mktemp("w") / "multitask.pt", model)


@pytest.fixture()
def source(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(1)
    cv2.imwrite(str(folder / "one.jpg"), rng.integers(0, 255, (64, 96, 3), dtype=np.uint8))
    cv2.imwrite(str(folder / "two.png"), rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    (folder / "zz_corrupt.png").write_bytes(b"\x89PNG broken")
    return folder


def test_detect_command(weights, source, tmp_path, capsys):
    project = tmp_path / "runs" / "detect"
    args = ["detect", "--weights", str(weights), "--source", str(source), "--imgsz", "96", "--device", "cpu",
            "--project", str(project), "--save-txt", "--save-conf", "--line-thickness", "1"]
    assert main(args) == 0
    out, err = capsys.readouterr()
    assert re.search(rf"^image 1/3 {re.escape(str(source / 'one.jpg'))}: 64x96 6 stars, \d+\.\dms$", out, re.M)
    assert re.search(r"^image 2/3 .*two\.png: 96x96 9 stars, \d+\.\dms$", out, re.M)
    assert re.search(r"^Speed: [\d.]+ms pre-process, [\d.]+ms inference, [\d.]+ms NMS per image at shape "
                     r"\(1, 3, 96, 96\)$", out, re.M)
    assert f"Results saved to {project / 'exp'}" in out
    assert "zz_corrupt.png" in err
    run = project / "exp"
    assert {p.name for p in run.iterdir()} == {"one.jpg", "two.png", "labels"}
    assert cv2.imread(str(run / "one.jpg")).shape == (64, 96, 3)
    for line in (run / "labels" / "one.txt").read_text().splitlines():
        values = line.split()
        n_polygon = len(values) - 1 - 4 - 5 * 3 - 1  # cls, box, 5 keypoints x y v, polygon, conf
        assert values[0] == "3" and n_polygon >= 6 and n_polygon % 2 == 0

    assert main(args + ["--nosave", "--classes", "0", "1"]) == 0  # a second run goes to exp2, labels only
    assert "(no detections)" in capsys.readouterr().out
    assert {p.name for p in (project / "exp2").iterdir()} == {"labels"}


def test_user_errors_are_one_line(weights, tmp_path, capsys):
    missing = tmp_path / "nowhere"
    assert main(["detect", "--weights", str(weights), "--source", str(missing)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"yolostitch detect: error: --source {missing}: no such file or directory"
    assert main(["detect", "--weights", str(weights), "--source", "http://example.com/bus.jpg"]) == 2
    assert "URLs and streams are not supported (nothing is downloaded)" in capsys.readouterr().err


def test_detect_py_script(weights, source, tmp_path, monkeypatch, capsys):
    """The top-level wrapper, run as ``python detect.py ...`` (in this process: a fresh interpreter costs
    seconds of imports and adds nothing the wrapper does)."""
    monkeypatch.setattr(sys, "argv", ["detect.py", "--weights", str(weights), "--source", str(source / "two.png"),
                                      "--imgsz", "64", "--device", "cpu", "--project", str(tmp_path / "p"),
                                      "--name", "n", "--hide-labels"])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_path(str(ROOT / "detect.py"), run_name="__main__")
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "image 1/1" in out and f"Results saved to {tmp_path / 'p' / 'n'}" in out
    assert (tmp_path / "p" / "n" / "two.png").is_file()


def test_imgsz_height_width(weights, source, tmp_path, capsys):
    """Stock's two-value ``--imgsz H W``: each image fits into H x W (rect padding to the stride), and the speed
    line names that shape; a size off the stride is rounded up with a warning; three values are refused."""
    base = ["detect", "--weights", str(weights), "--source", str(source / "one.jpg"), "--device", "cpu",
            "--project", str(tmp_path / "runs"), "--nosave"]
    assert main(base + ["--imgsz", "32", "96"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"one\.jpg: 32x64 ", out)  # 64 x 96 fits 32 x 96 at gain 0.5: 32 x 48, width padded to 64
    assert "at shape (1, 3, 32, 96)" in out
    assert main(base + ["--imgsz", "30", "90"]) == 0
    captured = capsys.readouterr()
    assert "--imgsz 30 90 must be a multiple of the max stride 32, using 32 96" in captured.err
    assert "at shape (1, 3, 32, 96)" in captured.out
    assert main(base + ["--imgsz", "32", "64", "96"]) == 2
    assert "--imgsz takes one value (square) or two (height width), got 3" in capsys.readouterr().err
