"""Conv+BN fusion for inference keeps every branch's outputs."""

import copy

import pytest
import torch

from yolostitch import build_model
from yolostitch.models.fuse import fuse_conv_bn


@torch.no_grad()
def test_fused_model_gives_the_same_outputs_with_no_batchnorm_left():
    torch.manual_seed(0)
    model = build_model("yolov5n-multitask.yaml", nc=3, kpt_shape=[4, 3]).eval()
    for m in model.modules():  # non-trivial statistics, or fusing would be an identity
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    fused = copy.deepcopy(model)
    assert fuse_conv_bn(fused) == 60
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    x = torch.rand(2, 3, 96, 128)
    a, b = model(x), fused(x)
    torch.testing.assert_close(b["det"][0], a["det"][0], rtol=1e-4, atol=1e-3)  # pixels
    torch.testing.assert_close(b["seg"][1], a["seg"][1], rtol=1e-4, atol=1e-4)  # prototypes
    torch.testing.assert_close(b["kpt"][0], a["kpt"][0], rtol=1e-4, atol=1e-3)


def test_fusing_a_training_model_is_refused():
    with pytest.raises(RuntimeError, match="eval mode"):
        fuse_conv_bn(build_model("yolov5n.yaml", nc=1))
