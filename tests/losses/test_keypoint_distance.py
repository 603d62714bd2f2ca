"""The keypoint distance term ``kdist`` beside OKS: far keypoints get a gradient at initialisation and move toward
their targets; with its gain at 0 the loss is the OKS-only one exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from yolostitch import build_model
from yolostitch.losses import ComputeLoss, assign_targets, targets_from_batch
from yolostitch.losses.keypoints import keypoint_terms

ROOT = Path(__file__).resolve().parents[2]
IMGSZ = 256  # P3 is 32 x 32 cells: a person 0.9 of the image tall is 29 cells tall there
# A standing person's 17 COCO keypoints as fractions of its box (x, y): face at the top, ankles at the bottom.
POSE = [(0.50, 0.07), (0.46, 0.05), (0.54, 0.05), (0.41, 0.07), (0.59, 0.07), (0.32, 0.20), (0.68, 0.20),
        (0.24, 0.36), (0.76, 0.36), (0.20, 0.50), (0.80, 0.50), (0.38, 0.52), (0.62, 0.52), (0.38, 0.74),
        (0.62, 0.74), (0.38, 0.96), (0.62, 0.96)]
FAR = 8.0  # cells between a keypoint and its anchor cell's centre for it to count as far


@pytest.fixture(scope="module")
def hyp() -> dict:
    return yaml.safe_load((ROOT / "data" / "hyps" / "hyp.scratch-low.yaml").read_text())


def people_batch() -> dict:
    """Two images: a large person (29 cells tall at P3) and a medium one (15 cells), every keypoint labelled."""
    boxes = torch.tensor([[0.50, 0.50, 0.36, 0.90], [0.40, 0.55, 0.20, 0.46]])
    pose = torch.tensor(POSE)
    xy = boxes[:, None, :2] + (pose[None] - 0.5) * boxes[:, None, 2:]
    keypoints = torch.cat((xy, torch.full((2, 17, 1), 2.0)), -1)
    torch.manual_seed(0)
    return {"img": torch.rand(2, 3, IMGSZ, IMGSZ) * 255, "cls": torch.zeros(2, dtype=torch.long), "bboxes": boxes,
            "batch_idx": torch.tensor([0, 1]), "keypoints": keypoints}


def pose_model() -> torch.nn.Module:
    """yolov5n-pose with P3 anchors large enough for the big person to be assigned on P3, where it is 29 cells
    tall: what a person filling a 512 image is on P4 with the stock anchors, at a quarter of the cost."""
    config = yaml.safe_load((ROOT / "models" / "yaml" / "yolov5n-pose.yaml").read_text())
    config["anchors"][0] = [30, 80, 50, 130, 70, 190]
    torch.manual_seed(0)
    return build_model(config, nc=1, kpt_shape=[17, 3]).train()


def per_keypoint(maps: list[torch.Tensor], loss: ComputeLoss, batch: dict, grad: bool = False):
    """(distance of the target from its anchor cell's centre, prediction error, |dL/draw xy| if ``grad``) in
    cells, for every keypoint of every assignment."""
    assignments = assign_targets(targets_from_batch(batch), loss.head, [p.shape[2:4] for p in maps], 4.0)
    dist, error, grads = [], [], []
    for p, a in zip(maps, assignments):
        ny, nx = p.shape[2:4]
        raw = p.detach()[a.batch, a.anchor, a.gj, a.gi].view(len(a), 17, 3)
        cell = torch.stack((a.gi, a.gj), 1).float().unsqueeze(1)
        true_xy = batch["keypoints"][a.instance, :, :2] * torch.tensor([nx, ny])
        dist.append((true_xy - cell - 0.5).norm(dim=-1).flatten())
        error.append((raw[..., :2] * 2 - 0.5 + cell - true_xy).norm(dim=-1).flatten())
        if grad:
            grads.append(p.grad[a.batch, a.anchor, a.gj, a.gi].view(len(a), 17, 3)[..., :2].norm(dim=-1).flatten())
    return torch.cat(dist), torch.cat(error), torch.cat(grads) if grad else None


def gradients_at_init(hyp: dict) -> tuple[torch.Tensor, torch.Tensor]:
    model, batch = pose_model(), people_batch()
    loss = ComputeLoss(model, hyp, IMGSZ)
    outputs = model(batch["img"] / 255)
    for p in outputs["kpt"]:
        p.retain_grad()
    loss(outputs, batch)[0].backward()
    dist, _, grads = per_keypoint(outputs["kpt"], loss, batch, grad=True)
    return dist, grads


def test_far_keypoints_get_a_usable_gradient_at_initialisation(hyp):
    """OKS alone: a keypoint 8+ cells from its cell (the face or ankles of a 29-cell-tall person) starts where
    exp(-e) is ~0, so its gradient vanishes; with the default kdist gain it is of the order of the near ones'."""
    assert hyp["kdist"] > 0
    dist, grads = gradients_at_init(hyp)
    far, near = dist >= FAR, dist < 3
    assert far.sum() >= 10 and near.sum() >= 10
    reference = grads[near].median()
    assert grads[far].median() > 0.2 * reference and grads[far].min() > 0.05 * reference

    dist0, grads0 = gradients_at_init({**hyp, "kdist": 0.0})
    assert torch.equal(dist0, dist)
    assert grads0[far].median() < 1e-6 * grads0[near].median()  # the old loss: far keypoints are dead


def train_steps(hyp: dict, steps: int = 15, lr: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """Prediction errors of the far keypoints before and after ``steps`` SGD steps on the large person's image.

    ``lr`` 0.1 is below the default recipe's step size: its loss sums over 64 images per step (nbs) at lr0 0.01.
    """
    model, both = pose_model(), people_batch()
    batch = {name: value[:1] for name, value in both.items()}  # image 0 holds instance 0
    loss = ComputeLoss(model, hyp, IMGSZ)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True)

    def far_errors() -> torch.Tensor:
        with torch.no_grad():
            maps = model(batch["img"] / 255)["kpt"]
        dist, error, _ = per_keypoint(maps, loss, batch)
        return error[dist >= FAR]

    before = far_errors()
    for _ in range(steps):
        optimizer.zero_grad()
        loss(model(batch["img"] / 255), batch)[0].backward()
        optimizer.step()
    return before, far_errors()


def test_a_few_steps_move_far_keypoints_toward_their_targets(hyp):
    before, after = train_steps(hyp)
    assert after.mean() < 0.5 * before.mean()  # measured: 12.1 -> 3.3 cells
    before0, after0 = train_steps({**hyp, "kdist": 0.0})  # the old loss leaves them where they are
    torch.testing.assert_close(before0, before)
    assert after0.mean() > 0.9 * before0.mean()  # measured: 12.1 -> 12.0 cells


def test_kdist_is_the_l1_distance_in_box_sizes_and_ignores_unlabelled_keypoints():
    head = type("H", (), {"anchors": torch.tensor([[[2.0, 2.0]]])})()
    assignments = assign_targets(torch.tensor([[0, 0, 0.5, 0.5, 0.5, 0.75]]), head, [(4, 4)], 4.0)
    keypoints = torch.tensor([[[0.4, 0.3, 2.0], [0.6, 0.7, 1.0], [0.9, 0.1, 0.0]]])
    raw = torch.zeros(1, 1, 4, 4, 9)
    for a in range(len(assignments[0])):  # exact xy for the labelled keypoints of every assigned cell
        gi, gj = int(assignments[0].gi[a]), int(assignments[0].gj[a])
        view = raw[0, 0, gj, gi].view(3, 3)
        view[:, :2] = (keypoints[0, :, :2] * 4 - torch.tensor([gi, gj])) / 2 + 0.25  # inverse of 2 * raw - 0.5
        view[2, :2] = 100.0  # wildly wrong, but unlabelled
    sigmas = torch.full((3,), 1 / 3)
    assert keypoint_terms([raw], assignments, keypoints, sigmas)["kdist"] < 1e-6
    raw[0, 0].view(4, 4, 3, 3)[..., :2, 0] += 0.3  # x of the labelled keypoints: 0.6 cells off
    raw[0, 0].view(4, 4, 3, 3)[..., :2, 1] -= 0.1  # y: 0.2 cells off
    box_size = (0.5 * 4 * 0.75 * 4) ** 0.5  # sqrt of the box area in cells
    kdist = keypoint_terms([raw], assignments, keypoints, sigmas)["kdist"]
    assert float(kdist) == pytest.approx((0.6 + 0.2) / box_size, rel=1e-5)


def test_kdist_gain_zero_adds_exactly_nothing(hyp):
    """Gain 0 is the OKS-only loss: the total is the sum of the other terms, bit for bit."""
    model, batch = pose_model(), people_batch()
    outputs = model(batch["img"] / 255)
    total, terms = ComputeLoss(model, {**hyp, "kdist": 0.0}, IMGSZ)(outputs, batch)
    assert terms["kdist"] == 0
    tasks = torch.stack([terms["box"] + terms["obj"] + terms["cls"], terms["kpt"] + terms["kobj"]])
    assert torch.equal(total.detach(), tasks.sum() * len(batch["img"]))
    with_term = ComputeLoss(model, hyp, IMGSZ)(outputs, batch)[1]
    assert with_term["kdist"] > 0 and all(torch.equal(with_term[n], terms[n]) for n in ("box", "kpt", "kobj"))
