"""Our checkpoints: plain tensors and types, weights_only-loadable, written atomically."""

import os

import pytest
import torch

from yolostitch import build_model, load_model
from yolostitch.weights import atomic_save, save_checkpoint


def test_round_trip_with_weights_only(tmp_path):
    model = build_model("yolov5n.yaml", nc=3)
    model.names = {0: "a", 1: "b", 2: "c"}
    path = save_checkpoint(tmp_path / "w.pt", model, epoch=4)
    raw = torch.load(path, weights_only=True)  # nothing but plain types and tensors
    assert raw["epoch"] == 4 and raw["config"]["nc"] == 3
    loaded = load_model(path)
    assert loaded.names == model.names and loaded.checkpoint["epoch"] == 4
    x = torch.rand(1, 3, 64, 64)
    torch.testing.assert_close(loaded(x)["det"][0], model.eval()(x)["det"][0])


def test_atomic_save_keeps_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "last.pt"
    atomic_save({"v": 1}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_save({"v": Unpicklable()}, path)
    assert torch.load(path, weights_only=True) == {"v": 1}
    assert os.listdir(tmp_path) == ["last.pt"]  # no temporary file left behind


def test_wrong_architecture_is_named(tmp_path):
    model = build_model("yolov5n.yaml")
    path = save_checkpoint(tmp_path / "w.pt", model)
    ckpt = torch.load(path, weights_only=True)
    ckpt["config"] = {**ckpt["config"], "width_multiple": 0.5}
    torch.save(ckpt, path)
    with pytest.raises(RuntimeError, match=r"w.pt: the yolostitch weights do not fit .*model.0.conv.weight"):
        load_model(path)


def test_missing_and_foreign_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_model(tmp_path / "nope.pt")
    torch.save({"something": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(RuntimeError, match="neither a yolostitch checkpoint nor a stock"):
        load_model(tmp_path / "other.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match="junk.pt: not a readable checkpoint"):
        load_model(tmp_path / "junk.pt")
