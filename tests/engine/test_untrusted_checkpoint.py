"""A checkpoint is data: val.py, detect.py and --resume never run code it names, nor write where it says.

Code extractors (module:function, torchscript:FILE) run only when the user passes --extractor; a checkpoint that
needs one says so. A resumed run writes into the run folder that holds the last.pt being resumed."""

import hashlib
import json
import sys

import pytest
import torch
import yaml
from torch import nn

from yolostitch import build_model
from yolostitch.cli.main import main
from yolostitch.engine.detector import detect
from yolostitch.engine.trainer import train
from yolostitch.engine.validator import run_val
from yolostitch.errors import FlagError, WeightsError
from yolostitch.extract import ExtractorSpecError
from yolostitch.models import FeatureContractError
from yolostitch.weights import save_checkpoint

JIT_DEPRECATED = pytest.mark.filterwarnings("ignore:`torch.jit.*is deprecated:FutureWarning")
CONTRACT = {"p3": {"channels": 3, "stride": 8}, "p4": {"channels": 3, "stride": 16},
            "p5": {"channels": 3, "stride": 32}}


def sha16(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


class Pyramid(nn.Module):
    """Average pools at strides 8, 16, 32: the maps of CONTRACT."""

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"p3": nn.functional.avg_pool2d(x, 8), "p4": nn.functional.avg_pool2d(x, 16),
                "p5": nn.functional.avg_pool2d(x, 32)}


@pytest.fixture()
def canary(tmp_path, monkeypatch):
    """Module ``untrusted_canary`` on sys.path: importing it leaves ``untrusted_canary.imported`` beside it."""
    source = tmp_path / "code" / "untrusted_canary.py"
    source.parent.mkdir()
    source.write_text("import pathlib\nimport torch.nn.functional as F\n"
                      "pathlib.Path(__file__).with_suffix('.imported').write_text('imported')\n"
                      "def maps(x):\n"
                      "    return {'p3': F.avg_pool2d(x, 8), 'p4': F.avg_pool2d(x, 16), 'p5': F.avg_pool2d(x, 32)}\n")
    monkeypatch.syspath_prepend(str(source.parent))
    yield source, source.with_suffix(".imported")
    sys.modules.pop("untrusted_canary", None)


def feature_checkpoint(path, spec, weights_hash):
    """A FeatureInput model whose checkpoint records ``spec`` as the extractor it was trained with."""
    model = build_model("yolov5n-feat.yaml", nc=5, features=CONTRACT)
    record = {"contract": CONTRACT, "cache": "", "extractor": spec, "weights_hash": weights_hash, "imgsz": 0,
              "extractor_weights": ""}
    return str(save_checkpoint(path, model, features=record))


def val_args(weights, data, tmp_path, *extra):
    return ["val", "--weights", weights, "--data", str(data), "--imgsz", "64", "--workers", "0", "--batch-size", "4",
            "--project", str(tmp_path / "val"), *extra]


def test_val_refuses_a_module_function_the_checkpoint_names(canary, tiny_shapes, tmp_path, capsys):
    source, marker = canary
    weights = feature_checkpoint(tmp_path / "crafted.pt", "untrusted_canary:maps", sha16(source))
    with pytest.raises(ExtractorSpecError, match=r"crafted.pt records the extractor 'untrusted_canary:maps', a "
                                                 r"module:function extractor that runs code .* --extractor "
                                                 r"untrusted_canary:maps"):
        run_val(weights, tiny_shapes, 64, 4, workers=0, project=tmp_path / "val", verbose=False)
    assert main(val_args(weights, tiny_shapes, tmp_path)) == 2
    assert "--extractor untrusted_canary:maps" in capsys.readouterr().err
    assert not marker.exists() and "untrusted_canary" not in sys.modules and not (tmp_path / "val").exists()
    # named by the user, it runs (and its hash is the recorded one)
    assert main(val_args(weights, tiny_shapes, tmp_path, "--extractor", "untrusted_canary:maps")) == 0
    assert marker.exists() and json.loads((tmp_path / "val" / "exp" / "metrics.json").read_text())["images"] == 4


def test_val_refuses_an_unknown_kind(tmp_path, tiny_shapes, monkeypatch):
    typo = tmp_path / "torchvison.py"  # a module with the misspelt name exists: it must not be imported
    typo.write_text("import pathlib\npathlib.Path(__file__).with_suffix('.imported').write_text('imported')\n"
                    "def resnet18(x):\n    return x\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    weights = feature_checkpoint(tmp_path / "typo.pt", "torchvison:resnet18", "0123456789abcdef")
    with pytest.raises(ExtractorSpecError, match=r"typo.pt: the extractor it records is unusable: .*unknown kind "
                                                 r"'torchvison' \(did you mean 'torchvision:'\?\); accepted "
                                                 r"extractor specs: 'torchvision:"):
        run_val(weights, tiny_shapes, 64, 4, workers=0, project=tmp_path / "val", verbose=False)
    assert not typo.with_suffix(".imported").exists() and "torchvison" not in sys.modules


@JIT_DEPRECATED
def test_detect_refuses_a_torchscript_the_checkpoint_names(tmp_path, tiny_shapes, monkeypatch):
    script = tmp_path / "pyramid.ts"
    torch.jit.script(Pyramid()).save(str(script))
    weights = feature_checkpoint(tmp_path / "ts.pt", f"torchscript:{script}", sha16(script))
    image = next((tiny_shapes.parent / "images" / "val").glob("*"))
    loads = []
    real_load = torch.jit.load
    monkeypatch.setattr(torch.jit, "load", lambda *a, **k: loads.append(a) or real_load(*a, **k))
    args = ["detect", "--weights", weights, "--source", str(image), "--imgsz", "64", "--project", str(tmp_path / "det")]
    assert main(args) == 2 and loads == []
    # the user passes it: it runs; another file than the one the model was trained with is refused unloaded
    assert main([*args, "--extractor", f"torchscript:{script}"]) == 0 and len(loads) == 1
    assert (tmp_path / "det" / "exp" / image.name).is_file()
    other = tmp_path / "other.ts"
    torch.jit.script(nn.Sequential(Pyramid())).save(str(other))
    with pytest.raises(FeatureContractError, match=f"weights {sha16(other)} differ from the {sha16(script)}"):
        detect(weights, image, 64, extractor=f"torchscript:{other}")
    assert len(loads) == 1


def test_a_builtin_kind_is_still_rebuilt_from_the_checkpoint(tmp_path, tiny_shapes):
    """ckpt: (like torchvision: and timm:) reads weights without running code: val.py rebuilds it by itself."""
    backbone = save_checkpoint(tmp_path / "n.pt", build_model("yolov5n.yaml", nc=5))
    contract = {"model.4": {"channels": 64, "stride": 8}, "model.6": {"channels": 128, "stride": 16},
                "model.9": {"channels": 256, "stride": 32}}
    model = build_model("yolov5n-feat.yaml", nc=5, features=contract)
    record = {"contract": contract, "cache": "", "extractor": f"ckpt:{backbone}", "weights_hash": sha16(backbone),
              "imgsz": 0, "extractor_weights": ""}
    weights = str(save_checkpoint(tmp_path / "feat.pt", model, features=record))
    assert main(val_args(weights, tiny_shapes, tmp_path)) == 0
    record["weights_hash"] = "0123456789abcdef"  # another backbone than the one it was trained on
    weights = str(save_checkpoint(tmp_path / "feat.pt", model, features=record))
    with pytest.raises(FeatureContractError, match="differ from the 0123456789abcdef"):
        run_val(weights, tiny_shapes, 64, 4, workers=0, project=tmp_path / "val", verbose=False)


# ------------------------------------------------------------------------------------------------------ resume


def edited(last, **changes):
    state = torch.load(last, weights_only=True)
    for key, value in changes.items():
        if key == "opt":
            state["opt"].update(value)
        else:
            state[key] = value
    torch.save(state, last)


def test_resume_writes_into_the_run_folder_of_last_pt(options, tmp_path):
    run = train(options(epochs=1, noval=True))
    folder = tmp_path / "runs" / "exp"
    assert run["save_dir"] == str(folder)
    last = folder / "weights" / "last.pt"
    elsewhere = tmp_path / "elsewhere"
    edited(last, save_dir=str(elsewhere / "run"), opt={"epochs": 2, "project": str(elsewhere), "name": "evil"})
    resumed = train(options(resume=str(last)))
    assert resumed["save_dir"] == str(folder) and resumed["epochs"] == 2
    assert not elsewhere.exists()
    assert torch.load(last, weights_only=True)["epoch"] == 1  # the resumed file itself went on
    written = yaml.safe_load((folder / "opt.yaml").read_text())
    assert (written["project"], written["name"]) == (str(tmp_path / "runs"), "exp")


def test_resume_checks_where_last_pt_is_and_its_options(options, tmp_path):
    run = train(options(epochs=1, noval=True))
    last = tmp_path / "runs" / "exp" / "weights" / "last.pt"
    moved = tmp_path / "last.pt"
    moved.write_bytes(last.read_bytes())
    with pytest.raises(FlagError, match=r"expected a checkpoint in a run's weights folder \(RUN/weights/last.pt\)"):
        train(options(resume=str(moved)))
    edited(last, opt={"epochs": 2, "evil": 1})
    with pytest.raises(WeightsError, match=r"last.pt: its 'opt' has options this version does not know: \['evil'\]"):
        train(options(resume=str(last)))
    state = torch.load(last, weights_only=True)
    del state["opt"]["evil"]
    state["opt"]["batch_size"] = "4"
    torch.save(state, last)
    with pytest.raises(WeightsError, match=r"values of the wrong type: batch_size='4' \(expected int\)"):
        train(options(resume=str(last)))
    assert run["epochs"] == 1


def test_resume_runs_a_code_extractor_only_when_named_again(options, canary, tmp_path):
    source, marker = canary
    run = train(options(cfg="yolov5n-feat.yaml", extractor="untrusted_canary:maps", epochs=1, noval=True))
    last = f"{run['save_dir']}/weights/last.pt"
    edited(last, opt={"epochs": 2})
    sys.modules.pop("untrusted_canary")
    marker.unlink()
    with pytest.raises(ExtractorSpecError, match="runs code from outside .*--extractor untrusted_canary:maps"):
        train(options(resume=last))
    assert not marker.exists() and "untrusted_canary" not in sys.modules
    resumed = train(options(resume=last, extractor="untrusted_canary:maps"))
    assert resumed["epochs"] == 2 and resumed["save_dir"] == run["save_dir"] and marker.exists()
    # an image model's run has no extractor to resume with
    image_run = train(options(epochs=1, noval=True, name="img"))
    image_last = f"{image_run['save_dir']}/weights/last.pt"
    edited(image_last, opt={"epochs": 2})
    with pytest.raises(FlagError, match="did not use an extractor"):
        train(options(resume=image_last, extractor="untrusted_canary:maps"))


class _SystemCall:
    """Pickles to ``os.system(command)``: what a crafted last.pt could ask the unpickler to run."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        import os
        return os.system, (self.command,)


def test_resume_reads_through_the_one_checkpoint_reader(options, tmp_path):
    """--resume refuses what load_model refuses, with the same message, and runs nothing from the file."""
    last = tmp_path / "runs" / "exp" / "weights" / "last.pt"
    last.parent.mkdir(parents=True)
    marker = tmp_path / "pwned"
    torch.save({"format": "yolostitch", "train_state": _SystemCall(f"touch {marker}"), "epoch": 0}, last)
    with pytest.raises(WeightsError, match=r"last.pt: refused to load: it references code .*system"):
        train(options(resume=str(last)))
    assert not marker.exists()
    model = build_model("yolov5n.yaml", nc=5)
    save_checkpoint(last, model, epoch=0)  # ours, but no training state (as a stripped best.pt)
    with pytest.raises(WeightsError, match=r"last.pt: not a yolostitch training checkpoint \(no optimizer state\)"):
        train(options(resume=str(last)))
