"""Bad model YAMLs give errors that name the file and row, what was expected and what came."""

import copy

import pytest

from yolostitch import ConfigError, Shape, build_model

BASE = {"nc": 2, "anchors": [[10, 13, 16, 30, 33, 23]],
        "backbone": [[-1, 1, "Conv", [16, 3, 2]], [-1, 1, "Conv", [32, 3, 2]]],
        "head": [[[1], 1, "Detect", ["nc", "anchors"]]]}


def with_row(section, index, row):
    cfg = copy.deepcopy(BASE)
    cfg[section][index] = row
    return cfg


@pytest.mark.parametrize("cfg, pattern", [
    (with_row("backbone", 1, [-1, 1, "NoSuchBlock", [32]]), r"backbone\[1\].*unknown module 'NoSuchBlock'"),
    (with_row("backbone", 1, [5, 1, "Conv", [32]]), r"backbone\[1\].*from=5 must point to an earlier layer"),
    (with_row("backbone", 1, [-3, 1, "Conv", [32]]), r"from=-3 points before the first layer"),
    (with_row("backbone", 1, [-1, 1, "Conv", [32, 3, 2, 1, 1, 1, 1, 1, 1]]), r"backbone\[1\].*Conv got arguments"),
    (with_row("backbone", 1, [-1, 1, "Conv", ["nc*2"]]), r"argument 'nc\*2' is not allowed"),
    (with_row("backbone", 1, [-1, 1, "Conv", ["__import__('os').system('true')"]]), r"is not allowed"),
    (with_row("backbone", 1, [-1, 1, "Conv"]), r"backbone\[1\].*4 items"),
    (with_row("backbone", 1, [-1, 0, "Conv", [32]]), r"'number' must be an int >= 1"),
    (with_row("backbone", 1, [-1, 1, "Conv", []]), r"needs its output channels"),
    (with_row("head", 0, [[0, 1], 1, "Concat", [1]]), r"head\[0\].*different strides \[2, 4\]"),
    (with_row("head", 0, [[1, 1], 1, "Detect", ["nc", "anchors"]]), r"2 inputs .* but 1 anchor sets"),
    (with_row("head", 0, [[1], 1, "Detect", ["nc", "kpt_shape"]]), r"config key the YAML does not set"),
    ({**BASE, "head": BASE["head"] + [[-1, 1, "Conv", [8]]]}, r"layer 2 \(Detect\) has no feature-map output"),
    ({**BASE, "nc": 0}, r"nc must be a positive integer"),
    ({"nc": 1}, r"missing 'backbone'"),
    ({"nc": 1, "backbone": [], "head": []}, r"^<dict>: no layers"),
    (with_row("head", 0, [[1], 1, "Detect", ["nc", "os.system"]]),
     r"head\[0\] \(layer 2\).*argument 'os.system' is not allowed as Detect's argument 1: .*Detect takes no other "
     r"string"),
    (with_row("backbone", 1, [-1, 1, "Conv", [32, "os.system"]]),
     r"backbone\[1\] \(layer 1\).*argument 'os.system' is not allowed as Conv's argument 1"),
    (with_row("backbone", 1, [-1, 1, "Conv", [32, [3, "relu"]]]),
     r"argument 'relu' is not allowed as Conv's argument 1"),
    (with_row("backbone", 1, [-1, 1, "nn.Upsample", [None, 2, "os.system"]]),
     r"nn.Upsample argument 2 'os.system' is not one of \['nearest', 'nearest-exact', 'bilinear', 'bicubic', 'area'\]"),
    (with_row("backbone", 1, [-1, 1, "Upsample", ["nearest", 2]]),
     r"'nearest' is not allowed as Upsample's argument 0"),
    (with_row("backbone", 0, [-1, 1, "FeatureInput", ["p3", 3, 2, 16, {"norm": "os.system"}]]),
     r"FeatureInput norm 'os.system' is not one of \['none', 'standardize', 'layernorm'\]"),
    (with_row("backbone", 0, [-1, 1, "FeatureInput", ["p 3", 3, 2, 16]]),
     r"FeatureInput argument 0 'p 3' is not a plain word"),
])
def test_bad_rows_name_the_row(cfg, pattern):
    with pytest.raises(ConfigError, match=pattern):
        build_model(cfg)


def test_bad_yaml_file_names_the_file(tmp_path):
    bad = tmp_path / "broken.yaml"
    bad.write_text("nc: [1\nbackbone: ]")
    with pytest.raises(ConfigError, match=r"broken.yaml: not valid YAML \(line 2, column \d+: .+\)$") as raised:
        build_model(bad)
    assert "\n" not in str(raised.value)  # one line, not PyYAML's caret drawing


def test_yaml_tags_are_not_constructed(tmp_path):
    evil = tmp_path / "evil.yaml"
    evil.write_text("nc: !!python/object/apply:os.system ['true']\nbackbone: []\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        build_model(evil)


def test_unknown_file_lists_builtin_models():
    with pytest.raises(FileNotFoundError, match="yolov5s.yaml"):
        build_model("yolov9000.yaml")


def test_empty_yaml_file_names_the_file(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("nc: 3\nbackbone: []\nhead: []\n")
    with pytest.raises(ConfigError, match=rf"^{path}: no layers"):
        build_model(path)


def test_string_arguments_name_the_file_layer_module_and_argument(tmp_path):
    path = tmp_path / "str.yaml"
    path.write_text("nc: 2\nanchors: [[10,13, 16,30, 33,23]]\nbackbone: [[-1, 1, Conv, [16, 3, 2]]]\n"
                    "head: [[-1, 1, Conv, [8, os.system]], [[1], 1, Detect, [nc, anchors]]]\n")
    with pytest.raises(ConfigError, match=rf"^{path} head\[0\] \(layer 1\) .*argument 'os.system' is not allowed "
                                          r"as Conv's argument 1"):
        build_model(path)


def test_declared_string_arguments_still_build():
    upsample = with_row("head", 0, [-1, 1, "nn.Upsample", [None, 2, "bilinear"]])
    assert build_model({**upsample, "head": upsample["head"][:1]}).layers[2].shape == Shape(32, 2)
    assert build_model(with_row("backbone", 1, [-1, 1, "ConvTranspose2d", [16, 2, 2, 0, 0, 1, True, 1, "zeros"]]))
    cfg = {"nc": 2, "backbone": [[-1, 1, "FeatureInput", ["p3", 8, 8, 16, {"norm": "layernorm"}]],
                                 [-1, 1, "nn.Upsample", [None, 2, "nearest"]]]}
    model = build_model(cfg)
    assert model.feature_contract() == {"p3": Shape(8, 8)} and model.layers[1].shape == Shape(16, 4)


def test_a_user_module_declares_the_strings_it_takes():
    import torch
    from yolostitch import register_module
    from yolostitch.models import registry

    @register_module("TestPool", strings={0: ("avg", "max")})
    def _pool(row):
        pool = torch.nn.AvgPool2d(2) if row.args[0] == "avg" else torch.nn.MaxPool2d(2)
        return pool, row.input.scaled(stride_factor=2)

    try:
        assert build_model(with_row("backbone", 1, [-1, 1, "TestPool", ["max"]])).layers[1].shape.stride == 4
        with pytest.raises(ConfigError, match=r"backbone\[1\] \(layer 1\).*TestPool argument 0 'sum' is not one "
                                              r"of \['avg', 'max'\]"):
            build_model(with_row("backbone", 1, [-1, 1, "TestPool", ["sum"]]))
        with pytest.raises(ConfigError, match=r"'avg' is not allowed as TestPool's argument 1: .*TestPool takes "
                                              r"other strings only as argument 0 \(one of \['avg', 'max'\]\)"):
            build_model(with_row("backbone", 1, [-1, 1, "TestPool", ["max", "avg"]]))
    finally:
        registry._REGISTRY.pop("TestPool", None)


def test_a_model_of_heads_only_has_the_image_stride():
    assert build_model({"nc": 2, "backbone": [], "head": [[-1, 1, "Classify", ["nc"]]]}).stride.tolist() == [1.0]


def test_every_builtin_yaml_builds():
    """Their string arguments (feature keys, upsample modes, config names) are all ones the modules take;
    built narrow and shallow, since only the rows' arguments are under test."""
    from yolostitch.models.config import load_model_config, model_yaml_dirs

    paths = sorted(p for d in model_yaml_dirs() for p in d.glob("*.yaml"))
    assert len(paths) >= 10
    for path in paths:
        config, _ = load_model_config(path)
        build_model({**config, "width_multiple": 0.125, "depth_multiple": 0.33})
