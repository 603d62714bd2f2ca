"""Detect: stock decoding, anchor order, bias prior."""

import math

import pytest
import torch

from yolostitch.heads import Detect
from yolostitch.heads.outputs import AnchorRows

ANCHORS = [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119]]


def test_decode_matches_the_stock_formula():
    head = Detect(nc=2, anchors=ANCHORS, channels=[4, 4], strides=[8, 16]).eval()
    raw = torch.randn(1, 3, 2, 3, 7)  # (bs, na, ny, nx, 5 + nc) on level 0
    out = head.decode(0, raw)
    s = raw.sigmoid()
    cell_x = torch.arange(3).view(1, 1, 1, 3)
    cell_y = torch.arange(2).view(1, 1, 2, 1)
    anchor = torch.tensor(ANCHORS[0], dtype=torch.float32).view(1, 3, 1, 1, 2)
    torch.testing.assert_close(out[..., 0], (s[..., 0] * 2 - 0.5 + cell_x) * 8)
    torch.testing.assert_close(out[..., 1], (s[..., 1] * 2 - 0.5 + cell_y) * 8)
    torch.testing.assert_close(out[..., 2:4], (s[..., 2:4] * 2) ** 2 * anchor[..., 0, 0, :].view(1, 3, 1, 1, 2))
    torch.testing.assert_close(out[..., 4:], s[..., 4:])


def test_anchors_stored_in_grid_units_and_reordered_to_follow_stride():
    head = Detect(nc=1, anchors=list(reversed(ANCHORS)), channels=[4, 4], strides=[8, 16])
    torch.testing.assert_close(head.anchors[0] * 8, torch.tensor(ANCHORS[0], dtype=torch.float32).view(3, 2))
    assert "anchors" in head.state_dict() and "stride" not in head.state_dict()


@pytest.mark.parametrize("nc", [1, 80])
def test_bias_prior(nc):
    head = Detect(nc=nc, anchors=ANCHORS, channels=[4, 4], strides=[8, 16])
    before = [m.bias.detach().clone().view(3, -1) for m in head.m]
    head.init_biases()
    for b0, m, s in zip(before, head.m, (8, 16)):
        b = m.bias.view(3, -1)
        torch.testing.assert_close(b[:, 4] - b0[:, 4], torch.full((3,), math.log(8 / (640 / s) ** 2)))
        torch.testing.assert_close(b[:, 5:] - b0[:, 5:], torch.full((3, nc), math.log(0.6 / (nc - 0.99999))))


def test_export_mode_keeps_the_decoded_rows_and_no_maps():
    head = Detect(nc=1, anchors=ANCHORS, channels=[4, 4], strides=[8, 16]).eval()
    feats = [torch.randn(1, 4, 4, 4), torch.randn(1, 4, 2, 2)]
    decoded, maps = head([f.clone() for f in feats])
    assert len(maps) == 2
    head.export = True
    exported = head([f.clone() for f in feats])
    assert isinstance(exported, AnchorRows) and exported.maps == []
    torch.testing.assert_close(exported.rows, decoded)
    assert decoded.shape == (1, 3 * (16 + 4), 6)
