"""Feature-input models end to end: extract a cache from a checkpoint's backbone, train on it (or on an
extractor run online), stitch-initialise from the image model, validate and detect on the cache."""

import json

import pytest
import torch

from yolostitch.cli.main import main
from yolostitch.data.feature_cache import FeatureCache
from yolostitch.engine.stitch_init import silu_inverse
from yolostitch.engine.trainer import train
from yolostitch.extract import build_extractor
from yolostitch.models import ConfigError, FeatureContractError, Shape, build_model
from yolostitch.weights import load_model


@pytest.fixture(scope="module")
def image_run(tiny_shapes, tmp_path_factory):
    """A yolov5n trained for 2 epochs on the tiny data, and a cache of its backbone (layers 4, 6, 9) with flips."""
    from yolostitch.engine.trainer import TrainOptions

    tmp = tmp_path_factory.mktemp("features")
    run = train(TrainOptions(cfg="yolov5n.yaml", data=str(tiny_shapes), epochs=2, batch_size=4, imgsz=64, workers=0,
                             project=str(tmp / "runs"), noval=True))
    weights = f"{run['save_dir']}/weights/last.pt"
    cache = tmp / "cache"
    assert main(["extract", "--extractor", f"ckpt:{weights}", "--data", str(tiny_shapes), "--imgsz", "64",
                 "--out", str(cache), "--workers", "0", "--flip", "--batch-size", "4"]) == 0
    return weights, cache


def test_extract_writes_the_backbone_contract(image_run):
    weights, cache_dir = image_run
    cache = FeatureCache(cache_dir)
    assert cache.contract == {"model.4": Shape(64, 8), "model.6": Shape(128, 16), "model.9": Shape(256, 32)}
    assert len(cache.entries) == 12 and cache.has_flips
    assert cache.header["extractor"] == f"ckpt:{weights}"


def test_stitch_init_reproduces_the_image_model(image_run, tiny_shapes, options):
    """Adapters fitted on the image model's own backbone outputs: the stitched model predicts what it predicts
    (the shipped feature configs have linear adapters, so the fit can be the identity: exact up to the solve)."""
    weights, cache = image_run
    run = train(options(cfg="yolov5n-feat.yaml", features=str(cache), weights=weights, stitch_init=8, epochs=1,
                        hyp="hyp.shapes.yaml"))
    stitched = build_model(load_model(f"{run['save_dir']}/weights/last.pt").yaml)
    # rebuild the state right after initialisation (training has moved it on): same procedure, no epochs
    from yolostitch.engine.stitch_init import fit_adapters
    from yolostitch.weights import layer_correspondence, read_weights, transfer_weights

    image_model = load_model(weights)
    w = read_weights(weights)
    assert transfer_weights(stitched, w.state, w.config)["loaded"] == len(stitched.state_dict()) - 19  # adapters+anchors
    extractor = build_extractor(f"ckpt:{weights}", imgsz=64)
    images = torch.rand(4, 3, 64, 64)
    _, mapping = layer_correspondence(stitched.yaml, image_model.yaml)
    scores = fit_adapters(stitched, image_model, [(images, extractor(images))], mapping)
    assert mapping == {0: 4, 1: 6, 2: 9} and min(scores.values()) > 0.9999
    stitched.eval()
    test = torch.rand(2, 3, 64, 64)
    ours, theirs = stitched(extractor(test))["det"][0], image_model(test)["det"][0]
    assert (ours[..., 4] - theirs[..., 4]).abs().max() < 1e-3  # objectness
    assert (ours[..., :4] - theirs[..., :4]).abs().max() < 0.05  # box, input pixels


def test_train_val_detect_on_the_cache(image_run, tiny_shapes, options, tmp_path):
    weights, cache = image_run
    run = train(options(cfg="yolov5n-feat.yaml", features=str(cache), epochs=2))
    best = f"{run['save_dir']}/weights/last.pt"
    record = torch.load(best, weights_only=True)["features"]
    assert record["cache"] == str(cache) and record["extractor"] == f"ckpt:{weights}"
    assert main(["val", "--weights", best, "--data", str(tiny_shapes), "--features", str(cache), "--workers", "0",
                 "--project", str(tmp_path / "val")]) == 0
    metrics = json.loads((tmp_path / "val" / "exp" / "metrics.json").read_text())
    assert metrics["images"] == 4 and metrics["box_map50"] >= 0
    assert main(["detect", "--weights", best, "--features", str(cache), "--project", str(tmp_path / "det"),
                 "--conf-thres", "0.001", "--max-det", "3", "--save-txt"]) == 0
    # all 12 cached images ran; train and val share 4 file names, so 8 drawings (as stock names outputs)
    assert len(list((tmp_path / "det" / "exp").glob("*.jpg"))) == 8
    assert len(list((tmp_path / "det" / "exp" / "labels").glob("*.txt"))) >= 1
    # without the cache, the model says what it needs
    assert main(["val", "--weights", best, "--data", str(tiny_shapes), "--project", str(tmp_path / "val")]) == 2


def test_multitask_branches_on_features(image_run, options):
    _, cache = image_run
    run = train(options(cfg="yolov5s-feat-multitask.yaml", features=str(cache), epochs=1))
    assert {"box_map50", "mask_map50", "pose_map50"} <= set(run)


def test_resume_from_the_cache(image_run, options):
    _, cache = image_run
    run = train(options(cfg="yolov5n-feat.yaml", features=str(cache), epochs=1))
    last = f"{run['save_dir']}/weights/last.pt"
    state = torch.load(last, weights_only=True)
    state["opt"]["epochs"] = 2
    torch.save(state, last)
    resumed = train(options(resume=last))
    assert resumed["epochs"] == 2 and resumed["save_dir"] == run["save_dir"]


def test_online_extractor_and_val_without_a_cache(image_run, tiny_shapes, options, tmp_path):
    weights, _ = image_run
    run = train(options(cfg="yolov5n-feat.yaml", extractor=f"ckpt:{weights}", epochs=1))
    best = f"{run['save_dir']}/weights/last.pt"
    assert torch.load(best, weights_only=True)["features"]["extractor"] == f"ckpt:{weights}"
    # val.py runs the recorded extractor on the images
    assert main(["val", "--weights", best, "--data", str(tiny_shapes), "--imgsz", "64", "--workers", "0",
                 "--project", str(tmp_path / "val")]) == 0


def test_feature_errors_are_clear(image_run, options, tmp_path):
    weights, cache = image_run
    with pytest.raises(ValueError, match=r"yolov5n-feat.yaml takes feature maps .*pass --features DIR"):
        train(options(cfg="yolov5n-feat.yaml"))
    with pytest.raises(ConfigError, match="no FeatureInput layer"):
        train(options(cfg="yolov5n.yaml", features=str(cache)))
    with pytest.raises(ValueError, match="--stitch-init fits the adapters to the backbone of --weights"):
        train(options(cfg="yolov5n-feat.yaml", features=str(cache), stitch_init=4))
    # a model trained on ResNet-18-shaped maps refuses a cache of other maps, naming the layer
    model = build_model("yolov5n-feat.yaml", nc=5)
    from yolostitch.engine.features import feature_source

    with pytest.raises(FeatureContractError, match=r"layer 0 \(FeatureInput 'layer2'\): expects map 'layer2' "
                                                   r"\(128ch, stride 8\); the cache .* has \['model.4'"):
        feature_source(model, cache, 64, torch.device("cpu"))


def test_silu_inverse():
    z = torch.linspace(-1.2, 6, 200)
    assert torch.allclose(silu_inverse(torch.nn.functional.silu(z)), z, atol=1e-5)
