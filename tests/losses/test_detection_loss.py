"""Detection loss and target assignment against stock YOLOv5 v7.0 (``yolov5.utils.loss.ComputeLoss``)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml

from yolostitch import build_model
from yolostitch.losses import ComputeLoss, assign_targets, targets_from_batch
from yolostitch.losses.detection import ciou, detection_gains

ROOT = Path(__file__).resolve().parents[2]
IMGSZ = 160
BATCH = 4  # the last image has no targets
TERMS = ("box", "obj", "cls")


@pytest.fixture(scope="module")
def hyp() -> dict:
    return yaml.safe_load((ROOT / "data" / "hyps" / "hyp.scratch-low.yaml").read_text())


@pytest.fixture(scope="module")
def models(stock_yolo):
    """(ours, stock) yolov5n pairs with equal weights, in train mode, built once per class count."""
    cache = {}

    def get(nc: int):
        if nc not in cache:
            torch.manual_seed(nc)
            stock = stock_yolo.build_stock_model("yolov5n.yaml", nc=nc).train()
            ours = build_model("yolov5n.yaml", nc=nc)
            ours.load_state_dict(stock.state_dict())
            cache[nc] = ours.train(), stock
        return cache[nc]

    return get


def random_batch(nc: int, seed: int = 0) -> dict:
    """A few dozen boxes over BATCH - 1 images: ordinary, tiny, huge and on the image border."""
    g = torch.Generator().manual_seed(seed)
    n = 36
    xy = torch.rand(n, 2, generator=g)
    wh = torch.rand(n, 2, generator=g) * 0.4 + 0.02
    wh[:4] = torch.tensor([[0.003, 0.004], [0.01, 0.002], [0.002, 0.05], [0.006, 0.006]])  # tiny
    wh[4:8] = torch.tensor([[0.98, 0.97], [0.9, 0.3], [0.5, 0.99], [0.99, 0.01]])  # huge / extreme
    xy[8:12] = torch.tensor([[0.0, 0.5], [1.0, 1.0], [0.5, 0.0], [0.999, 0.001]])  # on the border
    return {"batch_idx": torch.randint(0, BATCH - 1, (n,), generator=g),
            "cls": torch.randint(0, nc, (n,), generator=g),
            "bboxes": torch.cat((xy, wh), 1)}


def stock_loss_for(stock, hyp: dict, nc: int):
    """Stock's ComputeLoss, with the gain rescaling stock's train.py applies to the hyp beforehand."""
    from yolov5.utils.loss import ComputeLoss as StockComputeLoss

    h = dict(hyp)
    nl = stock.model[-1].nl
    h["box"] *= 3 / nl
    h["cls"] *= nc / 80 * 3 / nl
    h["obj"] *= (IMGSZ / 640) ** 2 * 3 / nl
    stock.hyp = h
    return StockComputeLoss(stock)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp(min=1e-12)).item()


CASES = {
    "nc80": (80, {}),
    "nc1": (1, {}),
    "nc80-smooth": (80, {"label_smoothing": 0.1}),
    "nc80-focal": (80, {"fl_gamma": 1.5}),
    "nc1-focal-pw": (1, {"fl_gamma": 2.0, "obj_pw": 1.5, "cls_pw": 2.0}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_loss_and_gradients_equal_stock(models, hyp, case):
    nc, overrides = CASES[case]
    h = {**hyp, **overrides}
    ours, stock = models(nc)
    images = torch.rand(BATCH, 3, IMGSZ, IMGSZ, generator=torch.Generator().manual_seed(1))
    batch = random_batch(nc)

    ours.zero_grad(set_to_none=True)
    total, terms = ComputeLoss(ours, h, imgsz=IMGSZ)(ours(images), batch)
    total.backward()

    stock.zero_grad(set_to_none=True)
    stock_total, stock_items = stock_loss_for(stock, h, nc)(stock(images), targets_from_batch(batch))
    stock_total.backward()

    assert rel(total, stock_total.squeeze()) < 1e-5
    for name, stock_value in zip(TERMS, stock_items):
        assert (terms[name] - stock_value).abs() <= 1e-5 * stock_value.abs(), name
    if nc == 1:
        assert terms["cls"] == 0
    else:
        assert terms["cls"] > 0

    # The maps' gradients differ from stock's by ~1e-7 (CIoU rounding); backprop amplifies that to ~5e-6.
    ours_params, stock_params = dict(ours.named_parameters()), dict(stock.named_parameters())
    for name in ("model.0.conv.weight", "model.13.cv1.conv.weight", "model.24.m.0.weight", "model.24.m.1.bias",
                 "model.24.m.2.weight"):
        assert rel(ours_params[name].grad, stock_params[name].grad) < 5e-5, name


def test_assignments_match_stock_and_point_at_their_targets(models, hyp, stock_yolo):
    ours, stock = models(80)
    head = ours.model[ours.heads["det"]]
    images = torch.zeros(BATCH, 3, IMGSZ, IMGSZ)
    targets = targets_from_batch(random_batch(80, seed=3))
    with torch.no_grad():
        maps = ours(images)["det"]
    levels = assign_targets(targets, head, [m.shape[2:4] for m in maps], hyp["anchor_t"])
    stock_cls, stock_box, stock_indices, stock_anchors = stock_loss_for(stock, hyp, 80).build_targets(maps, targets)

    assert len(levels) == head.nl
    for level, a in enumerate(levels):
        ny, nx = maps[level].shape[2:4]
        assert len(a) == len(stock_cls[level]) > 0
        # same assignments in the same order as stock
        for ours_field, stock_field in zip((a.batch, a.anchor, a.gj, a.gi), stock_indices[level]):
            assert torch.equal(ours_field, stock_field)
        assert torch.equal(a.cls, stock_cls[level])
        assert torch.equal(a.box, stock_box[level])
        assert torch.equal(a.anchor_wh, stock_anchors[level])
        # each assignment is its target row, seen from the assigned cell
        t = targets[a.instance]
        scale = torch.tensor([nx, ny], dtype=t.dtype)
        cell = torch.stack((a.gi, a.gj), 1).to(t.dtype)
        assert torch.equal(a.batch, t[:, 0].long()) and torch.equal(a.cls, t[:, 1].long())
        torch.testing.assert_close(a.box[:, :2], t[:, 2:4] * scale - cell, rtol=0, atol=1e-5)
        torch.testing.assert_close(a.box[:, 2:4], t[:, 4:6] * scale, rtol=0, atol=0)
        assert torch.equal(a.anchor_wh, head.anchors[level][a.anchor])
        assert (a.box[:, :2] >= -0.5).all() and (a.box[:, :2] <= 1.5).all()  # reachable by 2*sigmoid - 0.5
        ratio = a.box[:, 2:4] / a.anchor_wh
        assert (torch.max(ratio, 1 / ratio).max(1).values < hyp["anchor_t"]).all()


def test_no_targets_gives_finite_loss_with_zero_box_and_cls(models, hyp):
    ours, _ = models(80)
    empty = {"batch_idx": torch.zeros(0, dtype=torch.long), "cls": torch.zeros(0, dtype=torch.long),
             "bboxes": torch.zeros(0, 4)}
    ours.zero_grad(set_to_none=True)
    total, terms = ComputeLoss(ours, hyp, imgsz=IMGSZ)(ours(torch.rand(2, 3, IMGSZ, IMGSZ)), empty)
    assert torch.isfinite(total) and total > 0
    assert terms["box"] == 0 and terms["cls"] == 0 and terms["obj"] > 0
    total.backward()
    assert all(torch.isfinite(p.grad).all() for p in ours.parameters() if p.grad is not None)


def test_terms_dict_is_detached_and_gains_are_explicit(models, hyp):
    ours, _ = models(80)
    loss = ComputeLoss(ours, hyp, imgsz=IMGSZ)
    assert loss.gains == pytest.approx({"box": 0.05, "obj": 1.0 * (IMGSZ / 640) ** 2, "cls": 0.5})
    total, terms = loss(ours(torch.rand(BATCH, 3, IMGSZ, IMGSZ)), random_batch(80))
    assert set(terms) == set(TERMS)
    assert total.requires_grad and total.dim() == 0
    assert all(not v.requires_grad and v.dim() == 0 for v in terms.values())
    assert total.item() == pytest.approx(BATCH * sum(v.item() for v in terms.values()), rel=1e-6)


def test_gain_rescaling_for_other_level_and_class_counts():
    gains = detection_gains({"box": 0.05, "obj": 1.0, "cls": 0.5}, nl=4, nc=20, imgsz=1280)
    assert gains == pytest.approx({"box": 0.05 * 3 / 4, "obj": 4 * 3 / 4, "cls": 0.5 * 20 / 80 * 3 / 4})


def test_ciou_basic_values():
    box = torch.tensor([[2.0, 3.0, 1.0, 2.0]])
    assert ciou(box, box).item() == pytest.approx(1.0, abs=1e-6)
    far = torch.tensor([[10.0, 3.0, 1.0, 2.0]])
    assert ciou(box, far).item() < 0
    # concentric boxes with the same aspect ratio: CIoU is the plain IoU
    half = torch.tensor([[2.0, 3.0, 0.5, 1.0]])
    assert ciou(half, box).item() == pytest.approx(0.25, abs=1e-6)
    assert math.isfinite(ciou(torch.tensor([[0.0, 0.0, 1e-4, 1e-4]]), box).item())
