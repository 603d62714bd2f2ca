"""Every registered block name builds from a YAML row, and the Shape it declares matches a real forward.

The builder threads declared shapes through the rows without running anything, so a wrong channel or stride
rule in a block's registration would only show up as a crash (or a silently wrong stride) much later. Like
timm's test over every registered model, this walks the whole registry: a name registered without typical
arguments below fails ``test_every_registered_name_is_covered``.
"""

from __future__ import annotations

import pytest
import torch

from yolostitch.models.builder import _build_row
from yolostitch.models.registry import Row, get_entry, registered_names
from yolostitch.models.shape import Shape

CONFIG = {"nc": 3, "anchors": [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119]], "width_multiple": 1.0}
IN_STRIDE = 16  # the input map's stride; its 32x48 size keeps every reduction below exact
HEIGHT, WIDTH = 32, 48

# Typical YAML args (after ``from, number, name``) per plain name; ``ultralytics.X`` and ``nn.X`` share them.
# Several per block where arguments change the shape rule (kernel, stride, expansion).
EXAMPLES: dict[str, list[list]] = {
    "Conv": [[32], [32, 3, 2], [32, 3, 1, None, 1, 2]],
    "GhostConv": [[32, 3, 2], [32, 1, 1]],
    "DWConv": [[32, 3, 2], [16, 5, 1]],
    "RepConv": [[32, 3, 2], [32]],
    "LightConv": [[32, 3]],
    "Focus": [[32, 3], [32, 3, 2]],
    "GhostBottleneck": [[32, 3, 2], [16, 3, 1]],
    "SCDown": [[32, 3, 2]],
    "ADown": [[32]],
    "ConvTranspose": [[32], [32, 4, 4]],
    "Bottleneck": [[16], [32, False]],
    "SPP": [[32], [32, [3, 5]]],
    "SPPF": [[32, 5]],
    "SPPELAN": [[32, 16]],
    "ELAN1": [[32, 16, 8]],
    "CIB": [[16], [32]],
    "PSA": [[64]],
    "C1": [[32]],
    "C2": [[32]],
    "C2f": [[32], [32, True]],
    "C2fCIB": [[32]],
    "C2PSA": [[64]],
    "C3": [[32], [32, False]],
    "C3k2": [[32, False, 0.25], [64, True]],
    "C3x": [[32]],
    "C3Ghost": [[32]],
    "C3TR": [[32]],
    "BottleneckCSP": [[32]],
    "RepC3": [[32]],
    "A2C2f": [[64, True, 1], [64, False, 1]],
    "RepNCSPELAN4": [[32, 32, 16]],
    "CBAM": [[], [3]],
    "ChannelAttention": [[]],
    "SpatialAttention": [[7], [3]],
    "Upsample": [[None, 2, "nearest"], [None, 4, "nearest"]],
    "MaxPool2d": [[2], [2, 2], [3, 2, 1], [5, 1, 2]],
    "BatchNorm2d": [[]],
    "Identity": [[]],
    "ConvTranspose2d": [[32, 2, 2], [32, 4, 2, 1], [32, 3, 1, 1]],
}
IN_CHANNELS = {"PSA": 64, "C2PSA": 64}  # these blocks need c1 == c2
HEADS = {"Detect": ["nc", "anchors"], "Segment": [3, 32, 64], "Keypoints": [3, [5, 3]], "Classify": [3]}
MULTI_INPUT = {"Concat", "FeatureInput"}  # tested on their own below


def _plain(name: str) -> str:
    return name.split(".", 1)[1] if name.startswith(("ultralytics.", "nn.")) else name


def _resolve(args: list) -> list:
    return [CONFIG[a] if isinstance(a, str) and a in CONFIG else a for a in args]


def _row(name: str, inputs: list[Shape], number: int, args: list) -> Row:
    return Row(5, list(range(len(inputs))), inputs, number, _resolve(args), name, CONFIG, f"test row {name}")


def _block_cases():
    for name in registered_names():
        for args in EXAMPLES.get(_plain(name), []):
            for number in (1, 2):
                yield pytest.param(name, args, number, id=f"{name}-{args}-x{number}")


def _measured(out: torch.Tensor) -> Shape:
    """The shape a forward really produced, with the stride in input pixels (exact, or the test fails)."""
    assert out.dim() == 4, tuple(out.shape)
    h, w = out.shape[2:]
    assert (HEIGHT * IN_STRIDE) % h == 0 and (WIDTH * IN_STRIDE) % w == 0, f"output {h}x{w} is not a whole stride"
    sy, sx = HEIGHT * IN_STRIDE // h, WIDTH * IN_STRIDE // w
    assert sy == sx, f"height stride {sy} != width stride {sx}"
    return Shape(out.shape[1], sy)


def _registered_by_a_test(name: str) -> bool:
    """Blocks other tests register (e.g. test_builder's ``TestHalve``) are theirs to check, not this test's."""
    return getattr(get_entry(name).builder, "__module__", "").startswith(("tests.", "test_"))


def test_every_registered_name_is_covered():
    known = set(EXAMPLES) | set(HEADS) | MULTI_INPUT
    missing = [n for n in registered_names() if _plain(n) not in known and not _registered_by_a_test(n)]
    assert not missing, f"registered blocks without typical arguments in this test: {missing}"


@pytest.mark.parametrize("name,args,number", list(_block_cases()))
def test_declared_shape_matches_forward(name: str, args: list, number: int):
    torch.manual_seed(0)
    c1 = IN_CHANNELS.get(_plain(name), 16)
    module, declared = _build_row(get_entry(name), _row(name, [Shape(c1, IN_STRIDE)], number, args))
    with torch.no_grad():
        out = module.eval()(torch.randn(1, c1, HEIGHT, WIDTH))
    assert declared == _measured(out)


@pytest.mark.parametrize("name", [n for n in registered_names() if _plain(n) == "Concat"])
def test_concat_declares_summed_channels(name: str):
    inputs = [Shape(16, IN_STRIDE), Shape(8, IN_STRIDE), Shape(24, IN_STRIDE)]
    module, declared = _build_row(get_entry(name), _row(name, inputs, 1, [1]))
    out = module([torch.randn(1, s.channels, HEIGHT, WIDTH) for s in inputs])
    assert declared == _measured(out) == Shape(48, IN_STRIDE)


@pytest.mark.parametrize("options", [{}, {"stride": 32}, {"stride": 8, "norm": "layernorm"}])
def test_feature_input_declares_its_output_map(options: dict):
    args = ["p4", 16, IN_STRIDE, 32] + ([options] if options else [])
    module, declared = _build_row(get_entry("FeatureInput"), _row("FeatureInput", [Shape(3, 1)], 1, args))
    with torch.no_grad():
        out = module.eval()(torch.randn(1, 16, HEIGHT, WIDTH))
    assert declared == _measured(out) == Shape(32, options.get("stride", IN_STRIDE))


@pytest.mark.parametrize("name", sorted(HEADS))
def test_heads_declare_no_feature_map(name: str):
    """A head's output is per-anchor predictions or logits, not a map a later row could take."""
    inputs = [Shape(16, 8), Shape(32, 16)]
    module, declared = _build_row(get_entry(name), _row(name, inputs, 1, HEADS[name]))
    assert declared is None and isinstance(module, torch.nn.Module)
