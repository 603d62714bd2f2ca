"""A fresh keypoint branch starts at its cells' centres; a loaded checkpoint decodes as it always did."""

import pytest
import torch

from yolostitch import build_model

IMGSZ = 64


def cell_centres(strides=(8, 16, 32), na: int = 3) -> torch.Tensor:
    """(N, 2) centre of each row's cell in pixels, rows ordered as the heads flatten them."""
    rows = []
    for s in strides:
        n = IMGSZ // s
        y, x = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
        centres = (torch.stack((x, y), -1).view(-1, 2).float() + 0.5) * s
        rows.append(centres.expand(na, -1, -1).reshape(-1, 2))
    return torch.cat(rows)


@pytest.mark.parametrize("kpt_shape", [[17, 3], [4, 2]])
def test_fresh_keypoints_start_at_the_cell_centre(kpt_shape):
    """With PyTorch's default init the keypoints scattered 2-3 cells around the cell on real features; now every
    keypoint starts within a tenth of a cell of its cell's centre, visibility 0.5, whatever the input."""
    torch.manual_seed(0)
    model = build_model("yolov5n-multitask.yaml", nc=2, kpt_shape=kpt_shape).eval()
    with torch.no_grad():
        keypoints = model(torch.rand(2, 3, IMGSZ, IMGSZ) * 4)["kpt"][0]  # bright input: large features
    k, d = kpt_shape
    keypoints = keypoints.view(2, -1, k, d)
    strides = torch.cat([torch.full((3 * (IMGSZ // s) ** 2,), float(s)) for s in (8, 16, 32)])
    offset = (keypoints[..., :2] - cell_centres()[None, :, None]) / strides[None, :, None, None]
    assert offset.abs().max() < 0.1
    if d == 3:
        torch.testing.assert_close(keypoints[..., 2], torch.full_like(keypoints[..., 2], 0.5), atol=0.01, rtol=0)


def test_loaded_weights_decode_as_saved_whatever_the_fresh_init():
    """The initialisation only sets starting values: a state dict (e.g. from an earlier checkpoint, whose convs
    had PyTorch's default init) loads over it and gives the same keypoints."""
    torch.manual_seed(1)
    saved = build_model("yolov5n-pose.yaml", nc=1, kpt_shape=[17, 3]).eval()
    with torch.no_grad():
        for conv in saved.model[saved.heads["kpt"]].m:
            conv.weight.normal_(0, 0.05)
            conv.bias.uniform_(-0.1, 0.1)
    torch.manual_seed(2)
    loaded = build_model("yolov5n-pose.yaml", nc=1, kpt_shape=[17, 3]).eval()
    loaded.load_state_dict(saved.state_dict())
    x = torch.rand(1, 3, IMGSZ, IMGSZ)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x)["kpt"][0], saved(x)["kpt"][0], rtol=0, atol=0)
