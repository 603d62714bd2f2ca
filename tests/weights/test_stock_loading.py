"""Stock YOLOv5 pickles load through inert stand-ins; a malicious pickle runs nothing."""

import pickle
import zipfile

import pytest
import torch

from yolostitch import build_model, load_model
from yolostitch.weights.stock_checkpoint import load_pickle_safely


class _Payload:
    """Pickles to a call of os.system that would create a marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import os
        return os.system, (f"touch {self.marker}",)


def _stock_like_model_class():
    """A class pickled under the stock name models.yolo.Model, carrying a payload in its state."""
    cls = type("Model", (), {"__module__": "models.yolo"})
    return cls


@pytest.mark.parametrize("zip_format", [True, False])
def test_malicious_pickle_runs_nothing(tmp_path, zip_format):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"model": _Payload(marker), "epoch": 0}, path, _use_new_zipfile_serialization=zip_format)
    with pytest.raises(RuntimeError, match="evil.pt: refused to load.*system"):
        load_model(path)
    assert not marker.exists()


def test_payload_hidden_inside_a_stock_class_state_runs_nothing(tmp_path):
    """The stand-in for models.yolo.Model gets state whose unpickling would call os.system."""
    marker = tmp_path / "pwned"
    Model = _stock_like_model_class()
    import sys
    import types
    fake = types.ModuleType("models.yolo")
    fake.Model = Model
    sys.modules.setdefault("models", types.ModuleType("models"))
    sys.modules["models.yolo"] = fake
    try:
        obj = Model()
        obj.yaml = {"nc": 1}
        obj.hook = _Payload(marker)
        torch.save({"model": obj}, tmp_path / "evil.pt")
    finally:
        del sys.modules["models.yolo"]
    with pytest.raises(RuntimeError, match="refused to load"):
        load_model(tmp_path / "evil.pt")
    assert not marker.exists()


def test_pickle_protocol_tricks_are_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"model": _Payload(marker)}, protocol=2))
    with pytest.raises(RuntimeError, match="refused to load"):
        load_pickle_safely(path)
    assert not marker.exists()
    assert not zipfile.is_zipfile(path)


@pytest.mark.parametrize("name, nc, first", [("yolov5n.pt", 80, "person"), ("yolov5n-face.pt", 1, "face")])
def test_real_stock_checkpoints_load(shared_weights, name, nc, first):
    model = load_model(shared_weights / name)
    assert model.nc == nc and model.names[0] == first and len(model.names) == nc
    assert model.stride.tolist() == [8.0, 16.0, 32.0]
    assert model.checkpoint["kind"] == "stock YOLOv5" and model.checkpoint["date"].startswith("2022-02")
    assert all(p.dtype == torch.float32 for p in model.parameters())
    # the stock checkpoint's config is the stock yolov5n: same architecture as our YAML
    ours = build_model("yolov5n.yaml", nc=nc)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
