"""Feature extractors: contracts found by probing, deterministic untrained weights, and every spec scheme."""

import hashlib
import sys

import pytest
import torch
import torchvision
from torch import nn

from yolostitch import build_model
from yolostitch.extract import IMAGENET_MEAN, IMAGENET_STD, Extractor, build_extractor
from yolostitch.models import Shape
from yolostitch.weights import save_checkpoint

JIT_DEPRECATED = pytest.mark.filterwarnings("ignore:`torch.jit.*is deprecated:FutureWarning")


def sha16(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def contract(extractor):
    return [(key, shape.channels, shape.stride) for key, shape in extractor.features.items()]


def imagenet(x):
    return (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


def stage_outputs(model, names, x):
    """Outputs of the named submodules of an eager model, via forward hooks."""
    seen = {}
    handles = [model.get_submodule(n).register_forward_hook(lambda m, a, out, n=n: seen.__setitem__(n, out))
               for n in names]
    with torch.no_grad():
        model.eval()(x)
    for h in handles:
        h.remove()
    return seen


@pytest.fixture(scope="module")
def resnet18():
    return build_extractor("torchvision:resnet18", imgsz=64)


def test_resnet18_contract_frozen_and_deterministic(resnet18):
    assert contract(resnet18) == [("layer2", 128, 8), ("layer3", 256, 16), ("layer4", 512, 32)]
    assert resnet18.contract() == {"layer2": Shape(128, 8), "layer3": Shape(256, 16), "layer4": Shape(512, 32)}
    assert resnet18.spec == "torchvision:resnet18" and resnet18.normalise == "imagenet"
    assert len(resnet18.weights_hash) == 16
    again = build_extractor("torchvision:resnet18", imgsz=64)
    assert again.weights_hash == resnet18.weights_hash
    x = torch.rand(2, 3, 96, 64)
    out = resnet18(x)
    assert list(out) == ["layer2", "layer3", "layer4"]
    assert [tuple(v.shape) for v in out.values()] == [(2, 128, 12, 8), (2, 256, 6, 4), (2, 512, 3, 2)]
    for a, b in zip(out.values(), again(x).values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # frozen, and stays so inside a model that trains
    parent = nn.ModuleDict({"extractor": resnet18, "head": nn.Conv2d(512, 4, 1)}).train()
    assert not resnet18.training and not any(m.training for m in resnet18.modules())
    assert parent["head"].training and not any(p.requires_grad for p in resnet18.parameters())
    assert not out["layer4"].requires_grad
    assert parent["head"](out["layer4"]).requires_grad  # not inference tensors: trainable layers can consume them


@pytest.mark.parametrize("name", ["mobilenet_v3_small", "efficientnet_b0"])
def test_auto_nodes_of_features_models(name):
    extractor = build_extractor(f"torchvision:{name}", imgsz=64)
    assert [shape.stride for shape in extractor.features.values()] == [8, 16, 32]
    assert all(key.startswith("features.") for key in extractor.features)


def test_explicit_nodes_are_sorted_by_stride(resnet18):
    extractor = build_extractor("torchvision:resnet18:layer3,layer1", imgsz=64)
    assert contract(extractor) == [("layer1", 64, 4), ("layer3", 256, 16)]
    assert extractor.weights_hash == resnet18.weights_hash  # same deterministic untrained weights
    x = torch.rand(1, 3, 64, 64)
    torch.testing.assert_close(extractor(x)["layer3"], resnet18(x)["layer3"])


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_weights_file_round_trip(tmp_path, resnet18, suffix):
    with torch.random.fork_rng():
        torch.manual_seed(1)
        model = torchvision.models.resnet18()
    path = tmp_path / f"resnet18{suffix}"
    if suffix == ".pt":
        torch.save({"state_dict": model.state_dict(), "epoch": 3}, path)
    else:
        from safetensors.torch import save_file
        save_file(model.state_dict(), str(path))
    extractor = build_extractor("torchvision:resnet18", weights=str(path), imgsz=64)
    assert extractor.weights_hash == sha16(path) != resnet18.weights_hash
    x = torch.rand(1, 3, 64, 64)
    expected = stage_outputs(model, ["layer2", "layer3", "layer4"], imagenet(x))
    for key, value in extractor(x).items():
        torch.testing.assert_close(value, expected[key])


def test_bad_weights_files_are_named(tmp_path):
    state = torchvision.models.resnet18().state_dict()
    state.pop("fc.bias")
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "misfit.pt")
    with pytest.raises(ValueError, match=r"misfit.pt: the weights do not fit torchvision:resnet18: "
                                         r"missing \['fc.bias'\], unexpected \['extra.weight'\]"):
        build_extractor("torchvision:resnet18", weights=tmp_path / "misfit.pt", imgsz=64)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pt: not a PyTorch state-dict file torch can read safely"):
        build_extractor("torchvision:resnet18", weights=tmp_path / "junk.pt", imgsz=64)
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        build_extractor("torchvision:resnet18", weights=tmp_path / "nope.pt", imgsz=64)


def test_timm_features_only_and_full_model_weights(tmp_path):
    timm = pytest.importorskip("timm")
    extractor = build_extractor("timm:resnet18", imgsz=64)
    assert contract(extractor) == [("layer2", 128, 8), ("layer3", 256, 16), ("layer4", 512, 32)]
    assert extractor.normalise == "imagenet"
    assert build_extractor("timm:resnet18", imgsz=64).weights_hash == extractor.weights_hash
    assert contract(build_extractor("timm:resnet18:1,4", imgsz=64)) == [("layer1", 64, 4), ("layer4", 512, 32)]

    with torch.random.fork_rng():
        torch.manual_seed(1)
        full = timm.create_model("resnet18", pretrained=False).eval()
    torch.save(full.state_dict(), tmp_path / "timm_resnet18.pt")  # a training run saves the whole model
    loaded = build_extractor("timm:resnet18", weights=tmp_path / "timm_resnet18.pt", imgsz=64)
    assert loaded.weights_hash == sha16(tmp_path / "timm_resnet18.pt")
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x)["layer4"], full.forward_features(imagenet(x)))


def test_timm_missing_is_an_import_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)
    with pytest.raises(ImportError, match="needs the timm package: pip install timm"):
        build_extractor("timm:resnet18", imgsz=64)


class TwoLevels(nn.Module):
    def __init__(self):
        super().__init__()
        self.p3 = nn.Conv2d(3, 4, 8, 8)
        self.p4 = nn.Conv2d(4, 6, 2, 2)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        p3 = self.p3(x)
        return [p3, self.p4(p3)]


class Tokens(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.avg_pool2d(x, 16).flatten(2).transpose(1, 2)  # (B, N, C): ViT-like tokens


@JIT_DEPRECATED
def test_torchscript_list_outputs(tmp_path):
    module = TwoLevels().eval()
    torch.jit.script(module).save(str(tmp_path / "two.ts"))
    extractor = build_extractor(f"torchscript:{tmp_path / 'two.ts'}", imgsz=64)
    assert contract(extractor) == [("out0", 4, 8), ("out1", 6, 16)]
    assert extractor.normalise == "none" and extractor.weights_hash == sha16(tmp_path / "two.ts")
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        expected = module(x)
    for value, ref in zip(extractor(x).values(), expected):
        torch.testing.assert_close(value, ref)


@JIT_DEPRECATED
def test_maps_that_are_not_spatial_are_refused(tmp_path):
    torch.jit.script(Tokens()).save(str(tmp_path / "tokens.ts"))
    with pytest.raises(ValueError, match=r"output 'out0' has shape \(1, 16, 3\), not a \(B, C, H, W\).*timm"):
        build_extractor(f"torchscript:{tmp_path / 'tokens.ts'}", imgsz=64)


def test_torchvision_vit_is_refused(monkeypatch):
    tiny_vit = torchvision.models.VisionTransformer(image_size=64, patch_size=16, num_layers=1, num_heads=2,
                                                    hidden_dim=8, mlp_dim=16)
    monkeypatch.setattr(torchvision.models, "get_model", lambda name, weights=None: tiny_vit)
    with pytest.raises(ValueError, match=r"stage 'encoder' outputs \(1, 17, 8\), not a \(B, C, H, W\).*timm:"):
        build_extractor("torchvision:vit_b_16", imgsz=64)


def test_module_function(tmp_path, monkeypatch):
    source = tmp_path / "feats_for_test.py"
    source.write_text("import torch.nn.functional as F\n"
                      "NOT_CALLABLE = 3\n"
                      "class Net:\n    pass\n"
                      "def pyramid(images):\n"
                      "    return {'p4 map': F.avg_pool2d(images, 16), 'p3': F.avg_pool2d(images, 8)}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    extractor = build_extractor("feats_for_test:pyramid", imgsz=64)
    assert contract(extractor) == [("p3", 3, 8), ("p4_map", 3, 16)]  # sorted by stride, keys made YAML-safe
    assert extractor.normalise == "none" and extractor.weights_hash == sha16(source)
    x = torch.rand(1, 3, 64, 64)
    torch.testing.assert_close(extractor(x)["p3"], nn.functional.avg_pool2d(x, 8))
    for attribute, message in [("missing", "has no attribute 'missing'"), ("NOT_CALLABLE", "not callable"),
                               ("Net", "is a class")]:
        with pytest.raises(ValueError, match=f"feats_for_test:{attribute}: .*{message}"):
            build_extractor(f"feats_for_test:{attribute}", imgsz=64)


@pytest.fixture(scope="module")
def yolov5n_ckpt(tmp_path_factory):
    model = build_model("yolov5n.yaml", nc=3)
    path = save_checkpoint(tmp_path_factory.mktemp("ckpt") / "yolov5n.pt", model)
    return model.eval(), path


def test_ckpt_backbone_outputs_match_the_full_model(yolov5n_ckpt):
    model, path = yolov5n_ckpt
    extractor = build_extractor(f"ckpt:{path}", imgsz=64)
    assert contract(extractor) == [("model.4", 64, 8), ("model.6", 128, 16), ("model.9", 256, 32)]
    assert extractor.normalise == "none" and extractor.weights_hash == sha16(path)
    kept = [i for i, m in enumerate(extractor.body.model.model) if any(True for _ in m.parameters())]
    assert max(kept) == 9  # neck and heads dropped
    x = torch.rand(2, 3, 64, 96)
    expected = stage_outputs(model, ["model.4", "model.6", "model.9"], x)
    out = extractor(x)
    assert list(out) == ["model.4", "model.6", "model.9"]
    for key, value in out.items():
        torch.testing.assert_close(value, expected[key])
    explicit = build_extractor(f"ckpt:{path}:6,2", imgsz=64)
    assert contract(explicit) == [("model.2", 32, 4), ("model.6", 128, 16)]


def test_spec_errors(tmp_path, yolov5n_ckpt):
    _, path = yolov5n_ckpt
    for spec in ["resnet18", "torchvison:resnet18", "has space:fn", "timm:"]:
        with pytest.raises(ValueError, match="accepted extractor specs"):
            build_extractor(spec, imgsz=64)
    with pytest.raises(ValueError, match="torchvision model 'no_such_net' is unknown"):
        build_extractor("torchvision:no_such_net", imgsz=64)
    with pytest.raises(ValueError, match="'fasterrcnn_resnet50_fpn' is not a classification model"):
        build_extractor("torchvision:fasterrcnn_resnet50_fpn", imgsz=64)
    with pytest.raises(ValueError, match=r"torchvision:resnet18:layer9: cannot extract nodes \['layer9'\]"):
        build_extractor("torchvision:resnet18:layer9", imgsz=64)
    with pytest.raises(FileNotFoundError, match="missing.ts"):
        build_extractor(f"torchscript:{tmp_path / 'missing.ts'}", imgsz=64)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        build_extractor(f"ckpt:{tmp_path / 'missing.pt'}:4,6", imgsz=64)
    with pytest.raises(ValueError, match="layer 99 does not exist"):
        build_extractor(f"ckpt:{path}:4,99", imgsz=64)
    with pytest.raises(ValueError, match="weights= applies to torchvision: and timm:"):
        build_extractor(f"ckpt:{path}", weights=path, imgsz=64)


class _BadKey(nn.Module):
    def forward(self, x):
        return {"bad key": nn.functional.avg_pool2d(x, 8)}


def test_a_key_that_cannot_go_into_yaml_is_refused():
    with pytest.raises(ValueError, match="feature key 'bad key' must match"):
        Extractor(_BadKey(), "test:bad-key", "0" * 16, imgsz=64)


def test_forward_checks_images(resnet18):
    with pytest.raises(ValueError, match="multiples of 32"):
        resnet18(torch.rand(1, 3, 64, 50))
    with pytest.raises(ValueError, match=r"a \(B, 3, H, W\) image batch"):
        resnet18(torch.rand(3, 64, 64))
    assert resnet18.to("cpu") is resnet18
    moved = build_extractor("torchvision:resnet18:layer1", imgsz=64, device=torch.device("cpu"))
    assert moved.mean.device.type == "cpu"


@pytest.mark.parametrize("content, cause", [(bytes(range(256)) * 4, "Unsupported operand"),
                                            (b"", "the file is empty or cut short")])
def test_unreadable_extractor_weights_never_advise_loading_unsafely(tmp_path, content, cause):
    from yolostitch.extract import read_state_dict

    path = tmp_path / "rand.pt"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=rf"^{path}: not a PyTorch state-dict file torch can read safely "
                                         rf"\(weights_only\): {cause}") as info:
        read_state_dict(path, "torchvision:resnet18")
    assert "Re-running" not in str(info.value) and "set to `False`" not in str(info.value)
