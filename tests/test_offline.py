"""Importing yolostitch and building models touches no network and writes nothing outside the run dir."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROBE = r"""
import json, os, socket, sys
attempts = []
def refuse(name):
    def f(*a, **k):
        attempts.append(name)
        raise OSError("network disabled by test")
    return f
socket.socket.connect = refuse("connect")
socket.socket.connect_ex = refuse("connect_ex")
socket.getaddrinfo = refuse("getaddrinfo")
socket.create_connection = refuse("create_connection")
import yolostitch
import torch
threads = torch.get_num_threads()
model = yolostitch.build_model("yolov5n.yaml")
summary = model.info(imgsz=320, verbose=False)
from yolostitch.cli import main
main(["info", "--cfg", "yolov5n.yaml", "--imgsz", "64"])
print(json.dumps({"attempts": attempts, "omp": os.environ.get("OMP_NUM_THREADS"),
                  "config_dir": os.environ.get("YOLO_CONFIG_DIR"), "params": summary["parameters"],
                  "threads": threads}))
"""


def test_import_and_build_offline_without_writing(tmp_path):
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("YOLO", "OMP_NUM_THREADS", "XDG_"))}
    env.update(HOME=str(home), PYTHONPATH=str(ROOT), TMPDIR=str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=work, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["attempts"] == []
    assert report["omp"] is None  # ultralytics' OMP_NUM_THREADS=1 is not left behind
    plain = subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads())"], env=env,
                           capture_output=True, text=True, timeout=120)
    assert report["threads"] == int(plain.stdout)  # nor taken in by torch: all the user's cores still train
    assert report["params"] == 1_872_157
    assert list(home.iterdir()) == [] and list(work.iterdir()) == []
    assert not Path(report["config_dir"]).exists()  # ultralytics' private settings dir is removed at exit
