"""Mask and keypoint loss terms, partial labels, empty images, and the task balancers."""

from pathlib import Path

import pytest
import torch
import yaml

from yolostitch import build_model
from yolostitch.losses import ComputeLoss, TaskBalance, assign_targets
from yolostitch.losses.keypoints import keypoint_terms
from yolostitch.losses.segment import mask_term

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def hyp() -> dict:
    return yaml.safe_load((ROOT / "data" / "hyps" / "hyp.scratch-low.yaml").read_text())


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("yolov5n-multitask.yaml", nc=3, kpt_shape=[4, 3]).train()


def _square_mask(size: int, x1: int, y1: int, x2: int, y2: int) -> torch.Tensor:
    m = torch.zeros(size, size)
    m[y1:y2, x1:x2] = 1
    return m


def test_mask_term_is_near_zero_for_a_perfect_prediction_and_large_for_its_inverse():
    # one image, prototypes 32x32; prototype 0 is +20 on the instance, -20 elsewhere
    target = _square_mask(32, 8, 8, 24, 20)
    protos = torch.zeros(1, 2, 32, 32)
    protos[0, 0] = target * 40 - 20
    boxes = torch.tensor([[0.5, 0.4375, 0.5, 0.375]])  # normalised xywh of the square
    head = type("H", (), {"anchors": torch.tensor([[[2.0, 2.0]]])})()
    assignments = assign_targets(torch.tensor([[0, 0, 0.5, 0.4375, 0.5, 0.375]]), head, [(4, 4)], 4.0)
    coefficient_maps = [torch.zeros(1, 1, 4, 4, 2)]
    coefficient_maps[0][..., 0] = 1.0
    good = mask_term(coefficient_maps, protos, assignments, target[None], torch.tensor([True]), boxes)
    coefficient_maps[0][..., 0] = -1.0
    bad = mask_term(coefficient_maps, protos, assignments, target[None], torch.tensor([True]), boxes)
    assert good < 1e-6 and bad > 15


def dense_mask_loss(coefficient_maps, protos, assignments, masks, has_mask, boxes):
    """The mask term by its definition, as YOLOv5-seg computes it: every assignment's logits over the whole
    map, BCE against its instance's mask, summed over the pixels whose centre lies in the box, divided by the box
    area; the mean per level, summed over levels."""
    bs, nm, ph, pw = protos.shape
    ys, xs = torch.meshgrid(torch.arange(ph) + 0.5, torch.arange(pw) + 0.5, indexing="ij")
    total = protos.new_zeros(())
    for p, a in zip(coefficient_maps, assignments):
        rows = [j for j in range(len(a)) if has_mask[a.instance[j]]]
        terms = []
        for j in rows:
            b, i = int(a.batch[j]), int(a.instance[j])
            logits = torch.einsum("c,chw->hw", p[b, a.anchor[j], a.gj[j], a.gi[j]], protos[b])
            bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, masks[i].float(), reduction="none")
            cx, cy, w, h = (boxes[i] * torch.tensor([pw, ph, pw, ph])).tolist()
            inside = (xs >= cx - w / 2) & (xs < cx + w / 2) & (ys >= cy - h / 2) & (ys < cy + h / 2)
            terms.append((bce * inside).sum() / (w * h))
        if terms:
            total = total + torch.stack(terms).mean()
    return total


@pytest.mark.parametrize("shape", [(32, 32), (24, 40)])
def test_mask_term_equals_its_definition_with_gradients(shape):
    """The windowed computation (small boxes) and the whole-map one (large boxes) give the definition's value
    and gradients: boxes from 1 pixel to the whole map, on and across the map's edges, two images, three levels,
    an instance without a mask, and a non-square map (rect batches)."""
    torch.manual_seed(0)
    ph, pw = shape
    head = type("H", (), {"anchors": torch.tensor([[[1.0, 1.0], [2.0, 3.0], [4.0, 2.0]]] * 3)})()
    boxes = torch.tensor([[0.5, 0.5, 1.0, 1.0], [0.3, 0.4, 0.05, 0.08], [0.0, 1.0, 0.3, 0.25], [0.7, 0.2, 0.45, 0.3],
                          [0.52, 0.61, 0.2, 0.7], [0.9, 0.9, 0.35, 0.35], [0.25, 0.75, 0.5, 0.5], [0.6, 0.4, 0.9, 0.1]])
    image = torch.tensor([0, 0, 0, 1, 1, 1, 0, 1])
    targets = torch.cat([image[:, None].float(), torch.zeros(len(boxes), 1), boxes], 1)
    grids = [(ph // 4, pw // 4), (ph // 8, pw // 8), (ph // 16, pw // 16)]
    assignments = assign_targets(targets, head, grids, 4.0)
    masks = torch.rand(len(boxes), ph, pw) > 0.5
    has_mask = torch.tensor([True, True, True, True, True, True, False, True])
    coefficient_maps = [torch.randn(2, 3, h, w, 5, requires_grad=True) for h, w in grids]
    protos = torch.randn(2, 5, ph, pw, requires_grad=True)
    got = mask_term(coefficient_maps, protos, assignments, masks, has_mask, boxes)
    got_grads = torch.autograd.grad(got, [protos, *coefficient_maps])
    want = dense_mask_loss(coefficient_maps, protos, assignments, masks, has_mask, boxes)
    want_grads = torch.autograd.grad(want, [protos, *coefficient_maps])
    assert sum(len(a) for a in assignments) > 40
    assert torch.allclose(got, want, rtol=1e-5)
    for g, w in zip(got_grads, want_grads):
        assert torch.allclose(g, w, rtol=1e-4, atol=1e-6)


def test_instances_without_mask_or_keypoints_add_nothing(model, hyp):
    """Partial labels: instance 1 has no polygon and no labelled keypoint; its presence must not change the
    mask and keypoint terms (it still counts for detection)."""
    torch.manual_seed(1)
    images = torch.rand(2, 3, 64, 64)
    boxes = torch.tensor([[0.3, 0.3, 0.3, 0.3], [0.7, 0.6, 0.4, 0.5], [0.5, 0.5, 0.5, 0.4]])
    masks = torch.stack([_square_mask(16, 2, 2, 7, 7), torch.zeros(16, 16), _square_mask(16, 4, 4, 12, 11)]).byte()
    keypoints = torch.rand(3, 4, 3)
    keypoints[..., 2] = 2
    keypoints[1, :, 2] = 0
    full = {"img": images, "cls": torch.tensor([0, 1, 2]), "bboxes": boxes, "batch_idx": torch.tensor([0, 0, 1]),
            "masks": masks, "has_mask": torch.tensor([True, False, True]), "keypoints": keypoints}
    keep = torch.tensor([0, 2])
    without = {**{k: v[keep] for k, v in full.items() if k != "img"}, "img": images}
    loss = ComputeLoss(model, hyp, 64)
    out = model(images)
    _, with_terms = loss(out, full)
    _, without_terms = loss(out, without)
    for name in ("seg", "kpt", "kobj"):
        torch.testing.assert_close(with_terms[name], without_terms[name])
    assert with_terms["box"] != without_terms["box"]


def test_loss_is_finite_on_empty_images_and_images_without_keypoints(model, hyp):
    images = torch.rand(2, 3, 64, 64)
    empty = {"img": images, "cls": torch.zeros(0, dtype=torch.long), "bboxes": torch.zeros(0, 4),
             "batch_idx": torch.zeros(0, dtype=torch.long), "masks": torch.zeros(0, 16, 16, dtype=torch.uint8),
             "has_mask": torch.zeros(0, dtype=torch.bool), "keypoints": torch.zeros(0, 4, 3)}
    unlabelled = {"img": images, "cls": torch.tensor([1]), "bboxes": torch.tensor([[0.5, 0.5, 0.4, 0.4]]),
                  "batch_idx": torch.tensor([1]), "masks": torch.zeros(1, 16, 16, dtype=torch.uint8),
                  "has_mask": torch.tensor([False]), "keypoints": torch.zeros(1, 4, 3)}
    for balance in ("fixed", "uncertainty", "dwa"):
        loss = ComputeLoss(model, hyp, 64, balance=balance)
        for batch in (empty, unlabelled):
            model.zero_grad()
            total, terms = loss(model(images), batch)
            total.backward()
            assert torch.isfinite(total) and all(torch.isfinite(v) for v in terms.values())
            assert terms["seg"] == 0 and terms["kpt"] == 0 and terms["kobj"] == 0
            grads = [p.grad for p in model.parameters() if p.grad is not None]
            assert grads and all(torch.isfinite(g).all() for g in grads)


def test_keypoint_term_ignores_unlabelled_keypoints_and_is_zero_when_exact():
    head = type("H", (), {"anchors": torch.tensor([[[2.0, 2.0]]])})()
    targets = torch.tensor([[0, 0, 0.5, 0.5, 0.5, 0.5]])
    assignments = assign_targets(targets, head, [(4, 4)], 4.0)
    keypoints = torch.tensor([[[0.4, 0.4, 2.0], [0.6, 0.6, 2.0], [0.9, 0.1, 0.0]]])
    raw = torch.zeros(1, 1, 4, 4, 9)
    for a in range(len(assignments[0])):  # exact xy for the labelled keypoints of every assigned cell
        gi, gj = int(assignments[0].gi[a]), int(assignments[0].gj[a])
        xy = (keypoints[0, :, :2] * 4 - torch.tensor([gi, gj])) / 2 + 0.25  # inverse of 2 * raw - 0.5
        raw[0, 0, gj, gi].view(3, 3)[:, :2] = xy
        raw[0, 0, gj, gi].view(3, 3)[2, :2] = 100.0  # wildly wrong, but unlabelled
    terms = keypoint_terms([raw], assignments, keypoints, torch.full((3,), 1 / 3))
    assert terms["kpt"] < 1e-6
    raw[..., 0] += 1.0
    assert keypoint_terms([raw], assignments, keypoints, torch.full((3,), 1 / 3))["kpt"] > 0.1


def test_fixed_balance_is_the_plain_sum_and_uncertainty_starts_there():
    losses = {"det": torch.tensor(0.2), "seg": torch.tensor(0.05)}
    total, weights = TaskBalance("fixed", ["det", "seg"])(losses)
    assert total == pytest.approx(0.25) and weights == {}
    balance = TaskBalance("uncertainty", ["det", "seg"])
    total, weights = balance(losses)
    assert float(total.detach()) == pytest.approx(0.25) and weights == {"det": 1.0, "seg": 1.0}
    total.backward()
    assert balance.log_vars.grad is not None


def test_uncertainty_moves_weight_to_the_task_that_improved_less():
    balance = TaskBalance("uncertainty", ["det", "seg"])
    optimizer = torch.optim.SGD(balance.parameters(), lr=0.5)
    balance({"det": torch.tensor(1.0), "seg": torch.tensor(1.0)})  # first batch sets the reference
    for _ in range(200):  # det halves, seg stays: det's relative loss is lower, so det gets more weight
        optimizer.zero_grad()
        total, weights = balance({"det": torch.tensor(0.5), "seg": torch.tensor(1.0)})
        total.backward()
        optimizer.step()
    assert weights["det"] == pytest.approx(2.0, rel=0.05) and weights["seg"] == pytest.approx(1.0, rel=0.05)


def test_dwa_weights_the_slower_task_more_and_survives_a_checkpoint():
    balance = TaskBalance("dwa", ["det", "seg", "kpt"])
    balance.end_epoch({"det": 1.0, "seg": 1.0, "kpt": 1.0})
    _, weights = balance({t: torch.tensor(1.0) for t in ("det", "seg", "kpt")})
    assert weights == {"det": 1.0, "seg": 1.0, "kpt": 1.0}  # fewer than two epochs seen
    balance.end_epoch({"det": 0.5, "seg": 1.0, "kpt": 0.9})
    _, weights = balance({t: torch.tensor(1.0) for t in ("det", "seg", "kpt")})
    assert weights["seg"] > weights["kpt"] > weights["det"] and sum(weights.values()) == pytest.approx(3.0)
    restored = TaskBalance("dwa", ["det", "seg", "kpt"])
    restored.load_state_dict(balance.state_dict())
    assert restored({t: torch.tensor(1.0) for t in ("det", "seg", "kpt")})[1] == weights


def test_unknown_balance_is_a_clear_error():
    with pytest.raises(ValueError, match="--balance 'gradnorm'"):
        TaskBalance("gradnorm", ["det"])
