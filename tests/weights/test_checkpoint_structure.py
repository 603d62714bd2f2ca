"""Hand-edited or foreign-made yolostitch checkpoints: one WeightsError naming the file and the wrong entry, from
the one reader every checkpoint goes through; torch's advice to load unsafely is never repeated."""

import pytest
import torch

from yolostitch import build_model, load_model
from yolostitch.errors import WeightsError
from yolostitch.weights import read_checkpoint, read_weights, save_checkpoint
from yolostitch.weights.checkpoint import FORMAT_VERSION

TINY = {"nc": 2, "anchors": [[10, 13, 16, 30, 33, 23]],
        "backbone": [[-1, 1, "Conv", [8, 3, 2]], [-1, 1, "Conv", [8, 3, 2]]],
        "head": [[[1], 1, "Detect", ["nc", "anchors"]]]}


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    path = save_checkpoint(tmp_path_factory.mktemp("good") / "good.pt", build_model(TINY), epoch=0)
    return torch.load(path, weights_only=True)


def _edited(good, tmp_path, edit):
    ckpt = {**good}
    edit(ckpt)
    path = tmp_path / "edited.pt"
    torch.save(ckpt, path)
    return path


@pytest.mark.parametrize("edit, cause", [
    (lambda c: c.pop("config"), r"has no 'config'"),
    (lambda c: c.update(config={"nc": 3}), r"its 'config': missing 'backbone'"),
    (lambda c: c.update(config="yolov5n.yaml"), r"its 'config': a model config must be a mapping, got str"),
    (lambda c: c.update(names=["a", "b"]), r"'names' must map class indices to names.*got list \['a', 'b'\]"),
    (lambda c: c.update(names={0: 7}), r"'names' must map class indices to names"),
    (lambda c: c.update(model=None), r"'model' must be a state dict .*got None"),
    (lambda c: c.update(model={"model.0.conv.weight": [1.0]}), r"entry 'model.0.conv.weight' is list"),
    (lambda c: c.update(format_version=999),
     rf"written by a newer yolostitch \(format 999, this reads up to {FORMAT_VERSION}\)"),
    (lambda c: c.pop("format_version"), r"'format_version' must be a positive integer, got None"),
    (lambda c: c.update(format_version="1"), r"'format_version' must be a positive integer, got str '1'"),
    (lambda c: c.update(plugins="colour_task.py"), r"'plugins' must be a list of plugin names"),
])
def test_a_bad_entry_is_named_with_the_file(good, tmp_path, edit, cause):
    path = _edited(good, tmp_path, edit)
    for read in (load_model, read_weights, read_checkpoint):  # read_checkpoint: what --resume reads
        with pytest.raises(WeightsError, match=rf"^{tmp_path}/edited.pt: .*{cause}"):
            read(path)


def test_names_with_digit_keys_still_load(good, tmp_path):
    path = _edited(good, tmp_path, lambda c: c.update(names={"0": "cat", "1": "dog"}))
    assert load_model(path).names == {0: "cat", 1: "dog"}


def test_a_config_that_does_not_build_names_the_file(good, tmp_path):
    def edit(c):
        c["config"] = {**c["config"], "backbone": [[-1, 1, "NoSuchBlock", [8]]] + c["config"]["backbone"][1:]}
    with pytest.raises(WeightsError, match=rf"{tmp_path}/edited.pt: the architecture in its config cannot be "
                                           r"built \(.*unknown module 'NoSuchBlock'"):
        load_model(_edited(good, tmp_path, edit))


def test_a_wrong_shape_is_reported_as_a_wrong_shape(good, tmp_path):
    path = _edited(good, tmp_path, lambda c: c.update(model={**c["model"], "model.0.conv.weight": torch.zeros(5)}))
    with pytest.raises(WeightsError, match=r"edited.pt: .*missing \[\], wrong shapes \['model.0.conv.weight "
                                           r"\(5,\) vs \(8, 3, 3, 3\)'\], unexpected \[\]"):
        load_model(path)


def _conv3d(path):
    torch.save({"m": torch.nn.Conv3d(1, 1, 1)}, path)


@pytest.mark.parametrize("write, cause", [
    (lambda p: p.write_bytes(bytes(range(256)) * 4), r"not a readable checkpoint \(Unsupported operand"),
    (lambda p: p.write_bytes(b""), r"not a readable checkpoint \(the file is empty or cut short\)"),
    (_conv3d, r"refused to load: .*GLOBAL torch.nn.modules.conv.Conv3d"),
])
def test_unreadable_files_never_advise_loading_unsafely(tmp_path, write, cause):
    path = tmp_path / "bad.pt"
    write(path)
    with pytest.raises(WeightsError, match=rf"^{tmp_path}/bad.pt: {cause}") as info:
        load_model(path)
    message = str(info.value)
    assert "\n" not in message
    for advice in ("weights_only", "Re-running", "safe_globals", "trusted source"):
        assert advice not in message
