"""train.py / val.py flags and files a user gets wrong: a one-line error naming the flag or file, and no empty run
folder left behind; sizes that are not a multiple of the stride are rounded up with a warning, as stock."""

import logging
from pathlib import Path

import pytest
import yaml

from yolostitch.cli import main
from yolostitch.engine.stages import parse_stages
from yolostitch.engine.trainer import load_hyp, train
from yolostitch.errors import ConfigError, FlagError

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("argv, message", [
    (["train", "--batch-size", "0"], "argument --batch-size: must be at least 1, got 0"),
    (["train", "--epochs", "0"], "argument --epochs: must be at least 1, got 0"),
    (["train", "--imgsz", "-32"], "argument --imgsz/--img/--img-size: must be at least 1, got -32"),
    (["train", "--workers", "-1"], "argument --workers: must be at least 0, got -1"),
    (["train", "--epochs", "ten"], "argument --epochs: expected an integer, got 'ten'"),
    (["val", "--weights", "x.pt", "--batch-size", "0"], "argument --batch-size: must be at least 1, got 0"),
    (["val", "--weights", "x.pt", "--imgsz", "0"], "argument --imgsz/--img/--img-size: must be at least 1, got 0"),
])
def test_numeric_flags_out_of_range_are_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_batch_size_minus_one_is_stocks_autobatch_fallback(monkeypatch, capsys):
    from yolostitch.engine import trainer

    seen = {}
    monkeypatch.setattr(trainer, "train", lambda opt: seen.setdefault("batch", opt.batch_size))
    assert main(["train", "--batch-size", "-1"]) == 0
    assert seen["batch"] == 16 and "AutoBatch" in capsys.readouterr().err


def test_imgsz_off_the_stride_is_rounded_up_with_a_warning(options, caplog):
    with caplog.at_level(logging.WARNING, logger="yolostitch.engine.inputs"):
        summary = train(options(epochs=1, imgsz=60))
    assert "--imgsz 60 must be a multiple of the max stride 32, using 64" in caplog.text
    assert yaml.safe_load((Path(summary["save_dir"]) / "opt.yaml").read_text())["imgsz"] == 60  # as given
    assert summary["box_map50"] >= 0  # trained and validated at 64


def test_a_failing_run_leaves_no_empty_run_folder(options, tmp_path):
    project = tmp_path / "runs"
    with pytest.raises(FileNotFoundError, match="--hyp nope.yaml"):
        train(options(hyp="nope.yaml"))  # read after the run folder is made
    assert list(project.iterdir()) == []
    kept = project / "kept"
    (kept / "notes").mkdir(parents=True)  # an existing folder (--exist-ok) is never removed
    with pytest.raises(FileNotFoundError):
        train(options(hyp="nope.yaml", name="kept", exist_ok=True))
    assert (kept / "notes").is_dir()


def test_freeze_n_beyond_the_model_names_its_layer_count(options):
    with pytest.raises(FlagError, match=r"--freeze 999: the first 999 layers, but the model has 25 \(0..24\)"):
        train(options(freeze=list(range(999))))


def test_resume_of_a_missing_file_says_so(options):
    with pytest.raises(FlagError, match="--resume nope/weights/last.pt: no such file"):
        train(options(resume="nope/weights/last.pt"))


def test_hyperparameters_are_numbers_and_unknown_keys_are_named(tmp_path, capsys):
    values = yaml.safe_load((ROOT / "data" / "hyps" / "hyp.scratch-low.yaml").read_text())
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**values, "lr0": "abc"}))
    with pytest.raises(ConfigError, match=r"bad.yaml: lr0 must be a number, got 'abc'"):
        load_hyp(bad)
    typo = tmp_path / "typo.yaml"
    typo.write_text(yaml.safe_dump({**values, "lr_0": 0.02, "w_det": 1.0}))
    assert load_hyp(typo)["lr_0"] == 0.02
    err = capsys.readouterr().err
    assert "'lr_0' is not a hyperparameter yolostitch reads, ignored (did you mean 'lr0'?)" in err
    assert "w_det" not in err
    for shipped in ("hyp.scratch-low.yaml", "hyp.shapes.yaml"):
        load_hyp(shipped)
        assert capsys.readouterr().err == ""


def test_stage_epochs_must_be_positive_integers():
    with pytest.raises(FlagError, match=r"--stages 'det:x': the epochs after ':' must be a positive integer"):
        parse_stages("det:x,all", ["backbone", "neck", "det"])
    assert [s.epochs for s in parse_stages("det:3,all", ["backbone", "neck", "det"])] == [3, None]
