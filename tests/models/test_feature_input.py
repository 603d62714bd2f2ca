"""FeatureInput: the declared contract (key, channels, stride) is checked at the boundary, errors name the layer."""

import pytest
import torch

from yolostitch.models import ConfigError, FeatureContractError, Shape, build_model
from yolostitch.models.feature_input import apply_feature_contract
from yolostitch.models.config import load_model_config

RESNET18 = {"layer2": (128, 8), "layer3": (256, 16), "layer4": (512, 32)}


def maps(size=64, batch=2, spec=RESNET18, **overrides):
    out = {k: torch.randn(batch, c, size // s, size // s) for k, (c, s) in spec.items()}
    out.update(overrides)
    return out


@pytest.fixture(scope="module")
def feat():
    return build_model("yolov5n-feat.yaml", nc=3).eval()


def test_strides_and_channels_come_from_the_declarations(feat):
    assert feat.stride.tolist() == [8, 16, 32]
    assert feat.feature_contract() == {k: Shape(c, s) for k, (c, s) in RESNET18.items()}
    assert [layer.shape.channels for layer in feat.layers[:3]] == [64, 128, 256]  # yolov5n's backbone widths
    assert not feat.uses_image


def test_dict_and_list_inputs_give_the_same_output(feat):
    x = maps()
    by_key = feat(x)["det"][0]
    by_position = feat(list(x.values()))["det"][0]
    assert by_key.shape == (2, 3 * (8 * 8 + 4 * 4 + 2 * 2), 8)
    assert torch.equal(by_key, by_position)


@pytest.mark.parametrize("bad, message", [
    (maps(layer3=torch.randn(2, 200, 4, 4)), r"layer 1 \(FeatureInput 'layer3'\): expects 256 channels .* got 200"),
    ({k: v for k, v in maps().items() if k != "layer4"}, r"layer 2 \(FeatureInput 'layer4'\): expects feature 'layer4'"),
    (maps(layer2=torch.randn(2, 128, 4, 4)), r"layer 0 \(FeatureInput 'layer2'\): a 4x4 map at the declared stride 8 "
                                             r"covers 32x32 input pixels, but .* covers 64x64"),
    (maps(layer2=torch.randint(0, 9, (2, 128, 8, 8))), r"layer 0 .* floating-point tensor, got torch.int64"),
    (maps(layer4=torch.full((2, 512, 2, 2), float("nan"))), r"layer 2 .* 4096 non-finite value"),
    (maps(layer3=torch.randn(256, 4, 4)), r"layer 1 .* expects a \(batch, 256, H, W\) map, got shape \(256, 4, 4\)"),
    ([torch.randn(2, 128, 8, 8)], r"layer 1 .* position 1, the input has 1 tensor"),
    (torch.randn(2, 3, 64, 64), r"layer 1 .* position 1, the input has 1 tensor"),
])
def test_contract_violations_name_the_layer(feat, bad, message):
    with pytest.raises(FeatureContractError, match=message):
        feat(bad)


def test_fp16_maps_are_accepted(feat):
    out = feat({k: v.half() for k, v in maps().items()})["det"][0]
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


def test_options_resample_and_normalise():
    config, _ = load_model_config("yolov5n-feat.yaml")
    config["backbone"][1][3] = ["vit", 384, 14, 512, {"stride": 16, "norm": "layernorm"}]
    config["backbone"][0][3] = ["layer2", 128, 8, 256, {"norm": "standardize", "act": False}]
    model = build_model(config, nc=3).eval()
    assert model.layers[1].shape.stride == 16 and model.feature_inputs[1].s_in == 14
    # a stride-14 map of a 224-pixel image is 16x16; resampled to stride 16 it is 14x14, as the neck needs
    x = {"layer2": torch.randn(1, 128, 28, 28), "vit": torch.randn(1, 384, 16, 16), "layer4": torch.randn(1, 512, 7, 7)}
    assert model.model[1](x["vit"]).shape == (1, 128, 14, 14)
    assert torch.isfinite(model(x)["det"][0]).all()


@pytest.mark.parametrize("args, message", [
    (["layer2", 128], r"args are \[key, c_in, s_in"),
    (["layer2", 128, 8, 256, {"strides": 16}], r"options \['strides'\] are unknown"),
    (["layer2", 128, 8, 256, {"norm": "group"}], r"norm 'group' is not one of"),
    (["layer2", 0, 8, 256], r"c_in must be a positive integer, got 0"),
    (["layer2", 128, 8.5, 256], r"s_in must be a positive integer, got 8.5"),
])
def test_bad_rows_are_config_errors_naming_the_row(args, message):
    config, _ = load_model_config("yolov5n-feat.yaml")
    config["backbone"][0][3] = args
    with pytest.raises(ConfigError, match=r"backbone\[0\] \(layer 0\).*" + message):
        build_model(config)


def test_a_model_mixing_the_image_and_features_wants_both():
    config, _ = load_model_config("yolov5n.yaml")
    # the image stem up to P4 and an external stride-32 map in place of layers 7-9
    config["backbone"] = config["backbone"][:7] + [[-1, 1, "FeatureInput", ["p5", 96, 32, 1024]],
                                                   [-1, 1, "Identity", []], [-1, 1, "Identity", []]]
    model = build_model(config, nc=3).eval()
    assert model.uses_image
    image, p5 = torch.rand(1, 3, 64, 64), torch.randn(1, 96, 2, 2)
    assert model({"image": image, "p5": p5})["det"][0].shape[0] == 1
    with pytest.raises(FeatureContractError, match=r"layer 0 \(Conv\) reads the image"):
        model({"p5": p5})
    with pytest.raises(FeatureContractError, match=r"covers 64x64 input pixels, but the image covers 128x128"):
        model({"image": torch.rand(1, 3, 128, 128), "p5": p5})


def test_a_cache_contract_fills_the_yaml():
    config, _ = load_model_config("yolov5n-feat.yaml")
    contract = {"model.9": {"channels": 256, "stride": 32}, "model.4": {"channels": 64, "stride": 8},
                "model.6": {"channels": 128, "stride": 16}}
    fitted, notes = apply_feature_contract(config, contract)
    assert [r[3][:3] for r in fitted["backbone"]] == [["model.4", 64, 8], ["model.6", 128, 16], ["model.9", 256, 32]]
    assert len(notes) == 3 and "declared 'layer2' 128ch/s8" in notes[0]
    model = build_model(fitted, nc=3)
    assert [m.c_out for m in model.feature_inputs] == [64, 128, 256]  # the neck's side is unchanged

    # same keys, another stride: the declared stride stays the output, the map is resampled
    fitted, _ = apply_feature_contract(config, {**{k: {"channels": c, "stride": s} for k, (c, s) in RESNET18.items()},
                                                "layer4": {"channels": 512, "stride": 16}})
    assert fitted["backbone"][2][3] == ["layer4", 512, 16, 1024, {"act": False, "stride": 32}]

    with pytest.raises(ConfigError, match=r"2 maps for 3 FeatureInput layers"):
        apply_feature_contract(config, {"a": {"channels": 8, "stride": 8}, "b": {"channels": 8, "stride": 16}})
    with pytest.raises(ConfigError, match="no FeatureInput layer"):
        apply_feature_contract(load_model_config("yolov5n.yaml")[0], contract)


def test_gflops_count_adapters_neck_and_head(feat):
    figures = feat.info(imgsz=320, verbose=False)
    assert figures["gflops"] is not None and 0 < figures["gflops"] < 4.5  # yolov5n with its backbone: 4.5 at 640
