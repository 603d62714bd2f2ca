"""Stock YOLOv5-seg checkpoints pickle ``Segment.detect = Detect.forward`` as ``getattr(Detect, "forward")``: the
restricted unpickler reads that one form as an inert label and refuses every other getattr."""

import pytest
import torch

from yolostitch.errors import WeightsError
from yolostitch.weights.stock_checkpoint import load_pickle_safely

# a class pickled under stock's name, as stock's own Detect is
Detect = type("Detect", (), {"__module__": "models.yolo", "__qualname__": "Detect"})


class _Reference:
    """Pickles to ``getattr(owner, name)``, as pickle stores a function reached through its class."""

    def __init__(self, owner, name):
        self.owner, self.name = owner, name

    def __reduce__(self):
        return getattr, (self.owner, self.name)


def _save(tmp_path, owner, name):
    import sys
    import types

    path = tmp_path / "seg.pt"
    fake = types.ModuleType("models.yolo")  # pickle checks the class is importable under its name
    fake.Detect = Detect
    saved = {k: sys.modules.get(k) for k in ("models", "models.yolo")}
    sys.modules.update({"models": types.ModuleType("models"), "models.yolo": fake})
    try:
        torch.save({"model": {"detect": _Reference(owner, name)}, "epoch": 0}, path)
    finally:
        for k, v in saved.items():
            sys.modules.pop(k) if v is None else sys.modules.__setitem__(k, v)
    return path


def test_a_method_of_a_stock_class_reads_as_an_inert_label(tmp_path):
    obj = load_pickle_safely(_save(tmp_path, Detect, "forward"))
    assert obj["model"]["detect"] == "<stock models.yolo.Detect.forward>"


@pytest.mark.parametrize("owner, name", [(Detect, "__subclasses__"), (Detect, "__class__"), (Detect, "_private"),
                                         (torch.Size, "count")])  # torch.Size: a global torch allows, no stand-in
def test_any_other_getattr_is_refused(tmp_path, owner, name):
    with pytest.raises(WeightsError, match=f"seg.pt: .*refused getattr.*'{name}'"):
        load_pickle_safely(_save(tmp_path, owner, name))
