"""Training: a short run end to end, frozen layers stay fixed, a SIGKILLed run resumes, weights transfer."""

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from yolostitch import load_model
from yolostitch.data.config import load_data_config
from yolostitch.engine.trainer import _build, train

ROOT = Path(__file__).resolve().parents[2]


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_short_run_writes_everything(tiny_shapes, tmp_path, options):
    summary = train(options())
    run = Path(summary["save_dir"])
    rows = read_csv(run / "results.csv")
    assert [r["epoch"] for r in rows] == ["0", "1"]
    assert {"train/box", "train/obj", "train/cls", "metrics/box_map50", "metrics/box_map"} <= set(rows[0])
    assert all(torch.isfinite(torch.tensor(float(r["train/box"]))) for r in rows)
    for name in ("results.png", "train_batch0.jpg", "labels.jpg", "val_batch0_labels.jpg", "val_batch0_pred.jpg",
                 "metrics.json", "opt.yaml", "hyp.yaml", "weights/last.pt"):
        assert (run / name).is_file(), name
    raw = torch.load(run / "weights" / "last.pt", weights_only=True)  # plain tensors and types only
    assert raw["epoch"] == 1 and "optimizer" in raw["train_state"]
    model = load_model(run / "weights" / "last.pt")
    assert model.names[0] == "circle" and model.nc == 5
    assert json.loads((run / "metrics.json").read_text())["epochs"] == 2


def test_frozen_layers_keep_weights_and_batchnorm_statistics(tiny_shapes, tmp_path, options):
    torch.manual_seed(0)
    start = _build(options(), load_data_config(tiny_shapes), None)
    init = tmp_path / "init.pt"
    from yolostitch.weights import save_checkpoint
    save_checkpoint(init, start)
    summary = train(options(weights=str(init), freeze=list(range(10)), epochs=1))
    ckpt = torch.load(Path(summary["save_dir"]) / "weights" / "last.pt", weights_only=True)
    trained = ckpt["train_state"]["model"]
    before = start.state_dict()
    frozen = [k for k in before if int(k.split(".")[1]) < 10]
    assert any("running_mean" in k for k in frozen)
    for k in frozen:
        if "num_batches_tracked" not in k:
            assert torch.equal(trained[k], before[k]), k
    assert not all(torch.equal(trained[k], before[k]) for k in before if k not in frozen and "weight" in k)


def test_sigkilled_run_resumes_to_the_end(tiny_shapes, tmp_path):
    project = tmp_path / "runs"
    cmd = [sys.executable, str(ROOT / "train.py"), "--cfg", "yolov5n.yaml", "--data", str(tiny_shapes), "--epochs", "3",
           "--batch-size", "4", "--imgsz", "64", "--workers", "0", "--project", str(project)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path)
    last = project / "exp" / "weights" / "last.pt"
    deadline = time.time() + 300
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert last.exists(), "no checkpoint appeared"
    time.sleep(0.3)  # into the next epoch
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    epoch_at_kill = torch.load(last, weights_only=True)["epoch"]
    assert epoch_at_kill < 2, "the run finished before it could be killed"
    out = subprocess.run([sys.executable, str(ROOT / "train.py"), "--resume", str(last)], capture_output=True,
                         text=True, cwd=tmp_path, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"resuming {last} from epoch {epoch_at_kill + 2}/3" in out.stdout
    rows = read_csv(project / "exp" / "results.csv")
    assert [r["epoch"] for r in rows] == ["0", "1", "2"]
    final = torch.load(last, weights_only=True)
    assert final["epoch"] == 2
    metrics = json.loads((project / "exp" / "metrics.json").read_text())
    assert metrics["epochs"] == 3 and 0 <= metrics["box_map"] <= 1


def test_stock_weights_transfer_except_the_class_dependent_head(shared_weights, tiny_shapes, capsys, options):
    model = _build(options(weights=str(shared_weights / "yolov5n.pt")),
                   load_data_config(tiny_shapes), None)
    out = capsys.readouterr().out
    assert "transferred 342/349 tensors" in out  # all but Detect's 3 convs x (weight, bias) and anchors
    stock = load_model(shared_weights / "yolov5n.pt")
    assert torch.equal(model.model[0].conv.weight, stock.model[0].conv.weight)


def test_multitask_run_logs_every_term_and_resumes_its_balancer(tiny_shapes, options):
    summary = train(options(cfg="yolov5n-multitask.yaml", balance="uncertainty"))
    run = Path(summary["save_dir"])
    rows = read_csv(run / "results.csv")
    for column in ("train/box", "train/obj", "train/cls", "train/seg", "train/kpt", "train/kobj", "train/w_det",
                   "train/w_seg", "train/w_kpt", "metrics/mask_map50", "metrics/mask_map", "metrics/pose_map50",
                   "metrics/pose_map", "lr/seg", "lr/kpt"):
        assert column in rows[0], column
        assert all(torch.isfinite(torch.tensor(float(r[column]))) for r in rows), column
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"box_map50", "box_map", "mask_map50", "mask_map", "pose_map50", "pose_map"} <= set(metrics)
    last = run / "weights" / "last.pt"
    ckpt = torch.load(last, weights_only=True)
    log_vars = ckpt["train_state"]["balance"]["log_vars"]
    assert log_vars.abs().sum() > 0  # the task weights learned something
    ckpt["epoch"] = 0  # pretend the run stopped after its first epoch, with distinctive task weights
    ckpt["train_state"]["balance"]["log_vars"] = torch.full_like(log_vars, 2.0)
    torch.save(ckpt, last)
    resumed = train(options(resume=str(last)))
    assert resumed["epochs"] == 2
    second = read_csv(run / "results.csv")[1]
    assert abs(float(second["train/w_seg"]) - math.exp(-2.0)) < 0.02  # the balancer state came back
    assert load_model(last).heads == {"det": 24, "seg": 25, "kpt": 26}


def test_final_lines_say_which_epoch_best_pt_holds(tiny_shapes, options, monkeypatch, capsys):
    """Stock validates best.pt after training; we name its epoch and its logged metrics when it is not the last."""
    from yolostitch.engine import trainer

    scores = iter([0.3, 0.5, 0.2])  # the second epoch is the best
    monkeypatch.setattr(trainer, "fitness", lambda metrics: next(scores))
    summary = train(options(epochs=3))
    run = Path(summary["save_dir"])
    out = capsys.readouterr().out
    best_row = read_csv(run / "results.csv")[1]
    assert summary["best"]["epoch"] == 2 and "best.pt is epoch 2 of 3" in out
    assert summary["best"]["box_map50"] == float(best_row["metrics/box_map50"])
    assert json.loads((run / "metrics.json").read_text())["best"]["epoch"] == 2
    assert torch.load(run / "weights" / "best.pt", weights_only=True)["epoch"] == 1  # 0-based, as stock
    assert torch.load(run / "weights" / "last.pt", weights_only=True)["epoch"] == 2


def test_no_best_line_when_the_last_epoch_is_best(tiny_shapes, options, capsys):
    summary = train(options(epochs=1))
    assert "best" not in summary and "best.pt is epoch" not in capsys.readouterr().out


def test_save_period_keeps_epoch_checkpoints_as_stock(tiny_shapes, options):
    """Stock writes epoch{N}.pt when N % period == 0, N counted from 0; each is that epoch's checkpoint."""
    run = Path(train(options(epochs=3, save_period=2))["save_dir"]) / "weights"
    assert sorted(p.name for p in run.glob("epoch*.pt")) == ["epoch0.pt", "epoch2.pt"]
    assert torch.load(run / "epoch2.pt", weights_only=True)["epoch"] == 2
    assert torch.equal(torch.load(run / "epoch2.pt", weights_only=True)["model"]["model.24.m.0.weight"],
                       torch.load(run / "last.pt", weights_only=True)["model"]["model.24.m.0.weight"])


def test_multi_scale_resizes_each_batch_as_stock(tiny_shapes, options, monkeypatch):
    """--multi-scale: the long side is a stride multiple drawn from 0.5-1.5x imgsz; the model sees that size and
    trains; feature inputs are refused."""
    from yolostitch.engine import inputs
    from yolostitch.errors import FlagError

    images = torch.rand(2, 3, 64, 48)
    monkeypatch.setattr(inputs.random, "randrange", lambda lo, hi: 90)  # -> 90 // 32 * 32 = 64 ... as stock
    assert inputs.multi_scale(images, 64, 32) is images  # long side already 64
    monkeypatch.setattr(inputs.random, "randrange", lambda lo, hi: 100)  # -> 96: factor 1.5
    assert inputs.multi_scale(images, 64, 32).shape[2:] == (96, 96)  # 48 * 1.5 = 72, rounded up to 96

    seen = []
    monkeypatch.setattr(inputs.random, "randrange", lambda lo, hi: (lo, hi) == (32, 128) and 96)
    from yolostitch.models.stitch import StitchModel
    real_forward = StitchModel.forward
    monkeypatch.setattr(StitchModel, "forward", lambda self, x, *a, **k: seen.append(tuple(x.shape[2:])) or
                        real_forward(self, x, *a, **k))
    summary = train(options(epochs=1, multi_scale=True, noval=True))
    assert (96, 96) in seen and math.isfinite(summary["box_map"])
    with pytest.raises(FlagError, match="--multi-scale"):
        train(options(multi_scale=True, features="cache"))


def test_training_with_quad(tiny_shapes, options, monkeypatch, capsys):
    """The model trains on 2 x imgsz images, a quarter as many per batch; a batch size off 4 and feature inputs
    are refused."""
    from yolostitch.errors import FlagError
    from yolostitch.models.stitch import StitchModel

    seen = []
    real_forward = StitchModel.forward
    monkeypatch.setattr(StitchModel, "forward", lambda self, x, *a, **k: self.training and seen.append(
        tuple(x.shape)) or real_forward(self, x, *a, **k))
    summary = train(options(epochs=1, quad=True, noval=True, batch_size=8, cfg="yolov5n-multitask.yaml"))
    assert seen[0] == (2, 3, 128, 128) and all(shape[2:] == (128, 128) for shape in seen), seen
    assert math.isfinite(summary["box_map"]) and "--quad: each 4 training images as one of 128 px" in \
        capsys.readouterr().out
    with pytest.raises(FlagError, match="--batch-size must be a multiple of 4, got 6"):
        train(options(quad=True, batch_size=6))
    with pytest.raises(FlagError, match="--quad"):
        train(options(quad=True, features="cache"))


def test_noplots_writes_no_pictures(tiny_shapes, options):
    run = Path(train(options(epochs=1, noplots=True))["save_dir"])
    assert not list(run.glob("*.jpg")) and not list(run.glob("*.png"))
    assert (run / "results.csv").is_file() and (run / "metrics.json").is_file() and (run / "weights/last.pt").is_file()
