"""Our registry-built models against the real stock YOLOv5 v7.0 code (the `yolov5` package).

Skipped when that package is absent; the checkpoint comparisons also need ../shared/weights.
"""

import sys
import types

import pytest
import torch

from yolostitch import build_model, load_model
from yolostitch.models.summary import gflops

STOCK = {  # stock v7.0 model summary figures at nc=80
    "n": (1_872_157, 4.6), "s": (7_235_389, 16.6), "m": (21_190_557, 49.2), "l": (46_563_709, 109.6),
    "x": (86_749_405, 206.3),
}


def shapes(model):
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _architecture(model, count_gflops):
    """What the architecture test compares, read off one model so that only one (yolov5x: 350 MB, twice that
    while thop profiles a copy) is alive at a time."""
    return (sum(p.numel() for p in model.parameters()), list(shapes(model).items()), round(count_gflops(model), 1),
            model.model[-1].anchors.clone())


@pytest.mark.parametrize("size", list(STOCK))
def test_stock_architectures(stock_yolo, size):
    ours_params, ours_shapes, ours_flops, ours_anchors = _architecture(build_model(f"yolov5{size}.yaml"), gflops)
    stock_params, stock_shapes, stock_flops, stock_anchors = _architecture(
        stock_yolo.build_stock_model(f"yolov5{size}.yaml"), stock_yolo.stock_gflops)
    params, flops = STOCK[size]
    assert ours_params == params == stock_params
    assert ours_shapes == stock_shapes  # same keys, order and shapes
    assert ours_flops == flops == stock_flops
    torch.testing.assert_close(ours_anchors, stock_anchors)


def _same_outputs(ours, stock, image):
    ours_dec, ours_maps = ours.eval()(image)["det"]
    stock_dec, stock_maps = stock.eval()(image)
    worst = max((a - b).abs().max().item() for a, b in zip([ours_dec, *ours_maps], [stock_dec, *stock_maps]))
    return worst


@pytest.mark.parametrize("block, args, number", [
    ("Conv", [64, 3, 2], 1), ("GhostConv", [64, 3, 2], 1), ("DWConv", [64, 3, 2], 1), ("Focus", [64, 3], 1),
    ("GhostBottleneck", [64, 3, 2], 1), ("Bottleneck", [32], 2), ("SPP", [64, [5, 9, 13]], 1),
    ("SPPF", [64, 5], 1), ("C3", [64], 2), ("C3x", [64], 2), ("C3Ghost", [64], 2), ("C3TR", [64], 1),
    ("BottleneckCSP", [64], 2),
])
def test_stock_named_blocks_equal_stock(stock_yolo, block, args, number):
    """Every block a stock YAML can name behaves as stock's, weights copied across."""
    # stock's model builder runs a 256 x 256 image to find the strides; C3TR attends over every position of its
    # input, so behind a stride-2 stem that is 16384 tokens and a 16384^2 attention matrix per head (~10 GB):
    # a stride-8 stem gives 1024 tokens
    stem_stride = 8 if block == "C3TR" else 2
    cfg = {"nc": 2, "depth_multiple": 1.0, "width_multiple": 1.0, "anchors": [[10, 13, 16, 30, 33, 23]],
           "backbone": [[-1, 1, "Conv", [32, 3, stem_stride]], [-1, number, block, args]],
           "head": [[-1, 1, "Conv", [32, 1, 1]], [[-1], 1, "Detect", ["nc", "anchors"]]]}
    torch.manual_seed(0)
    stock = stock_yolo.build_stock_model(cfg)
    ours = build_model(cfg)
    assert list(shapes(ours).items()) == list(shapes(stock).items())
    ours.load_state_dict(stock.state_dict())
    assert _same_outputs(ours, stock, torch.rand(2, 3, 64, 96)) <= 1e-4


def _stock_unpickle(path, stock_yolo):
    """Stock's own loading path for a trusted file: the pickled classes resolve to the stock code."""
    yolo = stock_yolo.import_stock_yolo()  # first: the shims must be in place before any stock import
    import yolov5.models

    aliases = {"models": yolov5.models, "models.yolo": yolo,
               "models.common": sys.modules["yolov5.models.common"]}
    saved = {k: sys.modules.get(k) for k in aliases}
    sys.modules.update(aliases)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)  # trusted test file, stock code
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    model = ckpt["model"].float().eval()
    for m in model.modules():  # what stock's attempt_load does for checkpoints from older torch
        if isinstance(m, torch.nn.Upsample) and not hasattr(m, "recompute_scale_factor"):
            m.recompute_scale_factor = None
    return model


@pytest.mark.parametrize("name", ["yolov5n.pt", "yolov5n-face.pt"])
def test_stock_checkpoints_give_stock_outputs(stock_yolo, shared_weights, name):
    stock = _stock_unpickle(shared_weights / name, stock_yolo)
    ours = load_model(shared_weights / name)
    torch.manual_seed(0)
    for image in (torch.rand(2, 3, 256, 320), torch.rand(1, 3, 640, 640)):
        with torch.no_grad():
            assert _same_outputs(ours, stock, image) <= 1e-4
