"""The YAML builder: stock schema rows, depth/width scaling, shapes and strides known without running."""

import pytest
import torch

import yolostitch
from yolostitch import Shape, build_model

TINY = {
    "nc": 3, "depth_multiple": 0.33, "width_multiple": 0.25,
    "anchors": [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119]],
    "backbone": [[-1, 1, "Conv", [32, 3, 2]],       # 0 /2
                 [-1, 1, "Conv", [64, 3, 2]],       # 1 /4
                 [-1, 3, "C3", [64]],               # 2
                 [-1, 1, "Conv", [128, 3, 2]],      # 3 /8
                 [-1, 1, "Conv", [256, 3, 2]],      # 4 /16
                 [-1, 1, "SPPF", [256, 5]]],        # 5
    "head": [[-1, 1, "nn.Upsample", ["None", 2, "nearest"]],   # 6 /8
             [[-1, 3], 1, "Concat", [1]],                     # 7
             [-1, 1, "C2f", [64]],                             # 8 an ultralytics block by name
             [[8, 5], 1, "Detect", ["nc", "anchors"]]],
}


def test_shapes_and_strides_are_known_without_a_forward_pass():
    model = build_model(TINY)
    shapes = [layer.shape for layer in model.layers]
    assert shapes[:6] == [Shape(8, 2), Shape(16, 4), Shape(16, 4), Shape(32, 8), Shape(64, 16), Shape(64, 16)]
    assert shapes[6:9] == [Shape(64, 8), Shape(96, 8), Shape(16, 8)]
    assert model.stride.tolist() == [8.0, 16.0]
    assert model.layers[2].number == 1  # 3 * 0.33 rounds to 1


def test_declared_shapes_match_real_feature_maps():
    model = build_model(TINY).eval()
    image = torch.zeros(1, 3, 64, 96)
    seen = {}
    hooks = [layer.module.register_forward_hook(lambda m, i, o, k=layer.index: seen.__setitem__(k, o))
             for layer in model.layers if layer.shape is not None]
    model(image)
    for h in hooks:
        h.remove()
    for layer in model.layers:
        if layer.shape is not None:
            out = seen[layer.index]
            assert out.shape[1] == layer.shape.channels, layer
            assert (64 // out.shape[2], 96 // out.shape[3]) == (layer.shape.stride, layer.shape.stride), layer


def test_forward_returns_named_task_outputs():
    model = build_model(TINY)
    train_out = model(torch.zeros(2, 3, 64, 64))
    assert set(train_out) == {"det"} and [tuple(p.shape) for p in train_out["det"]] == [(2, 3, 8, 8, 8), (2, 3, 4, 4, 8)]
    decoded, maps = model.eval()(torch.zeros(2, 3, 64, 64))["det"]
    assert decoded.shape == (2, 3 * (64 + 16), 8)


def test_non_csp_repeats_chain_shapes():
    cfg = {"nc": 1, "backbone": [[-1, 1, "Conv", [16, 3, 2]], [-1, 3, "Conv", [32, 3, 2]]]}
    model = build_model(cfg)
    assert model.layers[1].shape == Shape(32, 16)  # three stride-2 convs after a stride-2 one
    assert model(torch.zeros(1, 3, 64, 64))["features"].shape == (1, 32, 4, 4)


def test_nc_and_channel_overrides():
    model = build_model("yolov5n.yaml", nc=2, ch=1)
    assert model.nc == 2 and model.model[-1].no == 7 and len(model.names) == 2
    assert model.model[0].conv.in_channels == 1


def test_user_modules_register_without_touching_ours():
    @yolostitch.register_module("TestHalve")
    class Halve(torch.nn.Module):
        """A user's block: average-pools by 2 and keeps channels."""

        @classmethod
        def from_row(cls, row):
            return cls(), row.input.scaled(stride_factor=2)

        def forward(self, x):
            return torch.nn.functional.avg_pool2d(x, 2)

    cfg = {"nc": 1, "backbone": [[-1, 1, "Conv", [16, 3, 2]], [-1, 1, "TestHalve", []]]}
    model = build_model(cfg)
    assert model.layers[1].shape == Shape(16, 4)
    with pytest.raises(KeyError, match="already registered"):
        yolostitch.register_module("TestHalve")(Halve)


def test_bn_and_activation_init_follow_stock():
    model = build_model("yolov5n.yaml")
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(m.eps == 1e-3 and m.momentum == 0.03 for m in bns)
