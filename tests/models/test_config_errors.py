"""Bad model YAMLs give errors that name the file and row, what was expected and what came."""

import copy

import pytest

from yolostitch import ConfigError, build_model

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
])
def test_bad_rows_name_the_row(cfg, pattern):
    with pytest.raises(ConfigError, match=pattern):
        build_model(cfg)


def test_bad_yaml_file_names_the_file(tmp_path):
    bad = tmp_path / "broken.yaml"
    bad.write_text("nc: [1\nbackbone: ]")
    with pytest.raises(ConfigError, match="broken.yaml: not valid YAML"):
        build_model(bad)


def test_yaml_tags_are_not_constructed(tmp_path):
    evil = tmp_path / "evil.yaml"
    evil.write_text("nc: !!python/object/apply:os.system ['true']\nbackbone: []\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        build_model(evil)


def test_unknown_file_lists_builtin_models():
    with pytest.raises(FileNotFoundError, match="yolov5s.yaml"):
        build_model("yolov9000.yaml")
