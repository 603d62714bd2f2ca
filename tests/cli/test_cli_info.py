"""The `yolostitch` console command."""

import subprocess
import sys

from yolostitch.cli import main


def test_info_prints_layer_table_and_summary(capsys):
    assert main(["info", "--cfg", "yolov5n.yaml"]) == 0
    out = capsys.readouterr().out
    assert "SPPF" in out and "Detect" in out
    assert "yolov5n summary: 214 layers, 1,872,157 parameters, 1,872,157 gradients, 4.6 GFLOPs at 640" in out


def test_info_loads_stock_weights(capsys, shared_weights):
    assert main(["info", "--weights", str(shared_weights / "yolov5n-face.pt")]) == 0
    assert "yolov5n-face summary: 214 layers, 1,765,270 parameters" in capsys.readouterr().out


def test_user_errors_are_one_line_not_a_traceback():
    out = subprocess.run([sys.executable, "-m", "yolostitch", "info", "--cfg", "missing.yaml"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert "yolostitch info: error: model config 'missing.yaml' not found" in out.stderr
    assert "Traceback" not in out.stderr
