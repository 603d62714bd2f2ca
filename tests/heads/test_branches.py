"""Segment, Keypoints and Classify branches: output layout aligned with Detect, decoding, YAML checks."""

import pytest
import torch

from yolostitch import build_model
from yolostitch.heads import Keypoints
from yolostitch.models import ConfigError


@pytest.fixture(scope="module")
def multitask():
    torch.manual_seed(0)
    return build_model("yolov5n-multitask.yaml", nc=5, kpt_shape=[5, 3]).eval()


def test_every_branch_has_one_row_per_detection_row(multitask):
    with torch.no_grad():
        out = multitask(torch.rand(2, 3, 96, 128))
    decoded, _ = out["det"]
    coefficients, protos = out["seg"]
    keypoints, _ = out["kpt"]
    n = 3 * (12 * 16 + 6 * 8 + 3 * 4)  # anchors x cells over strides 8, 16, 32
    assert decoded.shape == (2, n, 10)
    assert coefficients.shape == (2, n, 32)
    assert keypoints.shape == (2, n, 15)
    assert protos.shape == (2, 32, 24, 32)  # stride 4


def test_keypoint_rows_follow_the_detection_rows_cells(multitask):
    """Row r of the keypoint output decodes around the same cell as row r of the detection output."""
    head = multitask.model[multitask.heads["kpt"]]
    with torch.no_grad():
        for conv in head.m:  # raw keypoint offsets 0.25: decoded x, y = (cell + 0) * stride
            conv.weight.zero_()
            conv.bias.fill_(0.25)
        out = multitask(torch.rand(1, 3, 64, 64))
    decoded, _ = out["det"]
    keypoints = out["kpt"][0].view(1, -1, 5, 3)
    # raw 0.25 -> 2 * 0.25 - 0.5 = 0 cells from the corner of the anchor's cell
    strides = torch.cat([torch.full((3 * (64 // s) ** 2,), float(s)) for s in (8, 16, 32)])
    cells = torch.cat([torch.stack(torch.meshgrid(torch.arange(64 // s), torch.arange(64 // s), indexing="ij")[::-1],
                                   -1).view(1, -1, 2).expand(3, -1, -1).reshape(-1, 2) for s in (8, 16, 32)])
    torch.testing.assert_close(keypoints[0, :, 0, :2], cells.float() * strides[:, None])
    visibility = keypoints[0, :, :, 2]
    torch.testing.assert_close(visibility, torch.full_like(visibility, torch.sigmoid(torch.tensor(0.25)).item()))
    assert decoded.shape[1] == keypoints.shape[1]


def test_keypoint_decoding_formula():
    head = Keypoints(na=1, kpt_shape=[2, 3], channels=[4], strides=[8]).eval()
    raw = torch.randn(1, 1, 2, 3, 6)
    out = head.decode(0, raw).view(1, 1, 2, 3, 2, 3)
    r = raw.view(1, 1, 2, 3, 2, 3)
    cell_x = torch.arange(3).view(1, 1, 1, 3, 1).float()
    cell_y = torch.arange(2).view(1, 1, 2, 1, 1).float()
    torch.testing.assert_close(out[..., 0], (r[..., 0] * 2 - 0.5 + cell_x) * 8)
    torch.testing.assert_close(out[..., 1], (r[..., 1] * 2 - 0.5 + cell_y) * 8)
    torch.testing.assert_close(out[..., 2], r[..., 2].sigmoid())


def test_train_mode_outputs_are_raw_maps():
    model = build_model("yolov5n-multitask.yaml", nc=3, kpt_shape=[4, 2]).train()
    out = model(torch.rand(1, 3, 64, 64))
    assert [m.shape for m in out["kpt"]] == [(1, 3, 8, 8, 8), (1, 3, 4, 4, 8), (1, 3, 2, 2, 8)]
    maps, protos = out["seg"]
    assert maps[0].shape == (1, 3, 8, 8, 32) and protos.shape == (1, 32, 16, 16)


def test_classify_branch_pools_and_returns_probabilities():
    model = build_model("yolov5n-cls.yaml", nc=4)
    assert model.heads == {"det": 24, "cls": 25}
    logits = model.train()(torch.rand(2, 3, 64, 64))["cls"]
    probs = model.eval()(torch.rand(2, 3, 64, 64))["cls"]
    assert logits.shape == probs.shape == (2, 4) and probs.min() >= 0 and probs.max() <= 1


def _config(head_rows, kpt_shape=None):
    config = {"nc": 2, "anchors": [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119]],
              "backbone": [[-1, 1, "Conv", [16, 3, 2]], [-1, 1, "Conv", [16, 3, 2]], [-1, 1, "Conv", [32, 3, 2]],
                           [-1, 1, "Conv", [32, 3, 2]]],
              "head": head_rows}
    if kpt_shape:
        config["kpt_shape"] = kpt_shape
    return config


def test_branch_on_other_levels_than_detect_is_refused_naming_the_layer():
    rows = [[[2, 3], 1, "Detect", ["nc", "anchors"]], [[1, 3], 1, "Segment", ["anchors", 8, 16]]]
    with pytest.raises(ConfigError, match=r"layer 5 \(Segment from \[1, 3\]\).*same inputs.*Detect"):
        build_model(_config(rows))


def test_branch_without_detect_is_refused():
    with pytest.raises(ConfigError, match="needs a Detect"):
        build_model(_config([[[2, 3], 1, "Keypoints", ["anchors", "kpt_shape"]]], kpt_shape=[3, 3]))


@pytest.mark.parametrize("shape, message", [([3, 4], "kpt_shape must be"), ([0, 3], "kpt_shape must be"),
                                            ("x", "argument 'x' is not allowed as Keypoints's argument 1")])
def test_bad_kpt_shape_is_refused(shape, message):
    rows = [[[2, 3], 1, "Detect", ["nc", "anchors"]], [[2, 3], 1, "Keypoints", ["anchors", shape]]]
    with pytest.raises(ConfigError, match=message):
        build_model(_config(rows))


def test_stock_weights_fill_backbone_neck_and_detect_of_the_multitask_model(shared_weights):
    from yolostitch.weights import read_weights, transfer_weights

    state = read_weights(shared_weights / "yolov5n.pt").state
    model = build_model("yolov5n-multitask.yaml", kpt_shape=[17, 3])  # 80 classes, as the checkpoint
    counts = transfer_weights(model, state)
    assert counts["loaded"] == len(state) - 1  # all but the anchors (they come from the config)
    own = model.state_dict()
    assert all(torch.equal(own[k], v) for k, v in state.items() if not k.endswith("anchors"))
    five = build_model("yolov5n-multitask.yaml", nc=5, kpt_shape=[5, 3])
    counts = transfer_weights(five, state)
    assert counts["partial"] == 6  # 3 levels x (weight, bias): box/objectness rows kept, class rows fresh
    w = five.state_dict()["model.24.m.0.weight"].view(3, 10, -1)
    torch.testing.assert_close(w[:, :5], state["model.24.m.0.weight"].view(3, 85, -1)[:, :5])
