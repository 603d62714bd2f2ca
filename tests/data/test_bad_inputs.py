"""Bad data a user gives: each a one-line DataError naming the file, or a `skipped <file>: <reason>` line whose
reason is the file's real fault; never a traceback, never an install attempt."""

import json
import logging

import cv2
import numpy as np
import pytest
from PIL import Image

from yolostitch import build_model
from yolostitch.cli import main
from yolostitch.data import scan as scan_module
from yolostitch.data.check import check_data
from yolostitch.data.config import load_data_config
from yolostitch.data.scan import scan_data_split, scan_split, skipped_line
from yolostitch.errors import DataError
from yolostitch.weights import save_checkpoint


def write_image(path, h=40, w=60):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((h, w, 3), 128, np.uint8))
    return path


def write_label(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text) if isinstance(text, str) else path.write_bytes(text)


def data_yaml(tmp_path, body, name="d.yaml"):
    path = tmp_path / name
    path.write_text(f"path: {tmp_path}\n{body}")
    return path


def reasons(scan):
    return {p.file.rsplit("/", 1)[-1]: p.reason for p in scan.problems}


# --- 2. files that are not images: the real reason, and no pip install -------------------------------------


def test_empty_and_non_image_files_are_reported_as_what_they_are(tmp_path, monkeypatch):
    import ultralytics.utils.checks

    def no_install(*args, **kwargs):
        raise AssertionError(f"check_requirements{args} called: it may pip install")

    monkeypatch.setattr(ultralytics.utils.checks, "check_requirements", no_install)
    images = tmp_path / "images"
    write_image(images / "good.jpg")
    (images / "empty.jpg").write_bytes(b"")
    (images / "text.jpg").write_text("not an image at all\n")
    scan = scan_split([images], nc=1, cache=False)
    assert [lab.im_file.rsplit("/", 1)[-1] for lab in scan.labels] == ["good.jpg"]
    assert reasons(scan) == {"empty.jpg": "empty file (0 bytes); skipped",
                             "text.jpg": "not an image (cannot identify the image format); skipped"}


def test_the_scan_opens_images_with_pillows_own_open():
    assert Image.open.__module__ != "PIL.Image"  # ultralytics' wrapper (installs pi-heif on unknown files)
    assert scan_module._pillow_open().__module__ == "PIL.Image"


def test_an_unknown_image_open_wrapper_never_sees_a_non_image(tmp_path, monkeypatch):
    pillow_open, seen = Image.open, []

    def wrapper(path, *args, **kwargs):  # like ultralytics', but without a findable original
        seen.append(str(path))
        return pillow_open(path, *args, **kwargs)

    monkeypatch.setattr(Image, "open", wrapper)
    write_image(tmp_path / "images" / "good.png")
    (tmp_path / "images" / "junk.png").write_bytes(b"\x00junk" * 20)
    scan = scan_split([tmp_path / "images"], nc=1, cache=False)
    assert len(scan.labels) == 1 and reasons(scan)["junk.png"].startswith("not an image")
    assert seen and all(p.endswith("good.png") for p in seen)


# --- 6. a label file with text but no usable line skips its image ------------------------------------------


def test_label_file_without_a_valid_line_skips_its_image(tmp_path):
    img, lab = tmp_path / "images", tmp_path / "labels"
    for name in ("malformed", "garbage", "nonutf8", "empty", "partly", "none"):
        write_image(img / f"{name}.jpg")
    write_label(lab / "malformed.txt", "0 0.5 0.5 0.2\n7 0.5 0.5 0.2 0.2\n")
    write_label(lab / "garbage.txt", "\x01\x02 zz\n")
    write_label(lab / "nonutf8.txt", b"\x90\x98\x0f\xb9\xac\xd2\xf7")
    write_label(lab / "empty.txt", "")
    write_label(lab / "partly.txt", "0 0.5 0.5 0.2 0.2\nbad line\n")
    scan = scan_split([img], nc=2, cache=False)
    kept = {lab.im_file.rsplit("/", 1)[-1]: len(lab) for lab in scan.labels}
    assert kept == {"empty.jpg": 0, "none.jpg": 0, "partly.jpg": 1}  # backgrounds stay, partly keeps its box
    r = reasons(scan)
    assert r["malformed.txt"] == ("no valid label line (line 1: 4 values; expected 5 (box), an odd count >= 7 "
                                  "(polygon); 1 more bad line); image skipped")
    assert r["garbage.txt"].startswith("no valid label line (line 1: non-numeric value")
    assert r["nonutf8.txt"] == "not UTF-8 text (expected YOLO label lines); image skipped"
    assert r["partly.txt"] == "line 2: non-numeric value in 'bad line'; line skipped"


def test_skipped_image_survives_the_cache(tmp_path):
    write_image(tmp_path / "images" / "a.jpg")
    write_image(tmp_path / "images" / "b.jpg")
    write_label(tmp_path / "labels" / "a.txt", "9 0.5 0.5 0.2 0.2\n")
    first = scan_split([tmp_path / "images"], nc=1)
    again = scan_split([tmp_path / "images"], nc=1)  # from the cache
    assert len(again.labels) == len(first.labels) == 1 and again.problems == first.problems


# --- 3. a split without a usable image is an error, a background-only split is not -------------------------


def test_empty_image_folder_is_a_data_error_naming_yaml_split_and_folder(tmp_path):
    (tmp_path / "images" / "train").mkdir(parents=True)
    data = load_data_config(data_yaml(tmp_path, "train: images/train\nval: images/train\nnames: [a]\n"))
    with pytest.raises(DataError) as e:
        scan_data_split(data, data.splits["train"], cache=False)
    assert str(e.value) == (f"{tmp_path / 'd.yaml'}: 'train' ({tmp_path / 'images' / 'train'}) holds no readable "
                            "images (no image files (.jpg, .png, ...) found)")


def test_split_of_only_unreadable_images_is_a_data_error_after_its_problems(tmp_path, caplog):
    (tmp_path / "images" / "val").mkdir(parents=True)
    (tmp_path / "images" / "val" / "a.jpg").write_bytes(b"")
    write_image(tmp_path / "images" / "train" / "ok.jpg")
    data = load_data_config(data_yaml(tmp_path, "train: images/train\nval: images/val\nnames: [a]\n"))
    with caplog.at_level(logging.INFO, logger="yolostitch"), pytest.raises(DataError) as e:
        scan_data_split(data, data.splits["val"], cache=False)
    assert "'val' (" in str(e.value) and "holds no readable images (1 problem reported, e.g. " in str(e.value)
    assert "a.jpg: empty file (0 bytes)" in str(e.value)
    assert f"skipped {tmp_path / 'images' / 'val' / 'a.jpg'}: empty file (0 bytes); skipped" in caplog.text


def test_background_only_split_is_fine(tmp_path):
    write_image(tmp_path / "images" / "train" / "a.jpg")
    write_label(tmp_path / "labels" / "train" / "a.txt", "")
    data = load_data_config(data_yaml(tmp_path, "train: images/train\nval: images/train\nnames: [a]\n"))
    scan = scan_data_split(data, data.splits["train"], cache=False)
    assert scan.summary()["images"] == scan.summary()["backgrounds"] == 1
    assert check_data(data_yaml(tmp_path, "train: images/train\nval: images/train\nnames: [a]\n"), cache=False)


def test_check_data_prints_the_summary_then_fails_on_an_empty_split(tmp_path, capsys):
    write_image(tmp_path / "images" / "train" / "ok.jpg")
    (tmp_path / "images" / "val").mkdir(parents=True)
    (tmp_path / "images" / "val" / "x.png").write_text("no")
    data = data_yaml(tmp_path, "train: images/train\nval: images/val\nnames: [a]\n")
    assert main(["check-data", "--data", str(data), "--no-cache"]) == 2
    captured = capsys.readouterr()
    assert "  val: 0 images" in captured.out and "x.png: not an image" in captured.out
    assert captured.err.startswith(f"yolostitch check-data: error: {data}: 'val' (")
    assert "holds no readable images" in captured.err and "Traceback" not in captured.err


# --- 4. a data YAML without 'train' (or 'val') ---------------------------------------------------------------


def test_missing_train_split_is_a_data_error_where_it_is_needed(tmp_path, caplog):
    write_image(tmp_path / "images" / "val" / "a.jpg")
    data = load_data_config(data_yaml(tmp_path, "val: images/val\nnames: [a]\n"))  # fine to validate on
    with pytest.raises(DataError) as e:
        data.split("train", "to train on")
    assert str(e.value) == f"{tmp_path / 'd.yaml'}: no 'train' split (it has ['val']), needed to train on"
    assert data.split("val") == data.splits["val"]
    only_train = load_data_config(data_yaml(tmp_path, "train: images/val\nnames: [a]\n", "t.yaml"))
    with caplog.at_level(logging.INFO, logger="yolostitch"):
        assert only_train.val_sources() == only_train.splits["train"]
    assert "t.yaml has no 'val' split: validating on the 'train' split" in caplog.text


# --- 5. data YAML / COCO JSON that are not text or not JSON --------------------------------------------------


def test_non_utf8_data_yaml_is_a_data_error(tmp_path):
    path = tmp_path / "bin.yaml"
    path.write_bytes(b"\x06\xf1\xbb\xce\x9fU9\"\xa7\t\xaa\x0e3\x9b")
    with pytest.raises(DataError, match=r"bin\.yaml: not UTF-8 text \(expected a data config in YAML\)$"):
        load_data_config(path)


@pytest.mark.parametrize("names", ["names: [a]\n", ""])
@pytest.mark.parametrize("content, message", [
    (b"not json {\n", r"bad\.json: not valid JSON \(line 1 column 1: Expecting value\)$"),
    (b'{"images": [\n  {"id": 1,}\n]}', r"bad\.json: not valid JSON \(line 2 column 12: Expecting property name"),
    (b"$o\x10\xcd\x8e\x17\xdc\xca]\xb0\xf1", r"bad\.json: not UTF-8 text \(expected a COCO \.json\)$")])
def test_unreadable_coco_json_is_a_data_error_naming_it(tmp_path, names, content, message):
    (tmp_path / "bad.json").write_bytes(content)
    data = data_yaml(tmp_path, f"train: bad.json\nval: bad.json\n{names}")
    with pytest.raises(DataError, match=message):
        check_data(data, cache=False)


def test_check_data_cli_names_a_bad_json_in_one_line(tmp_path, capsys):
    (tmp_path / "bad.json").write_text("not json {")
    data = data_yaml(tmp_path, "train: bad.json\nval: bad.json\nnames: [a]\n")
    assert main(["check-data", "--data", str(data)]) == 2
    err = capsys.readouterr().err
    assert err == f"yolostitch check-data: error: {tmp_path / 'bad.json'}: not valid JSON (line 1 column 1: " \
                  "Expecting value)\n"


# --- 1. val.py prints what the scan skipped, as train.py and check-data do ----------------------------------


def test_val_prints_the_skipped_lines(tmp_path, capsys):
    img, lab = tmp_path / "images" / "val", tmp_path / "labels" / "val"
    for i in range(2):
        write_image(img / f"{i}.jpg", 48, 64)
        write_label(lab / f"{i}.txt", "0 0.5 0.5 0.3 0.3\n")
    (img / "zero.jpg").write_bytes(b"")
    write_label(lab / "1.txt", "0 0.5 0.5 0.3 0.3\n5 0.5 0.5 0.1 0.1\n")
    data = data_yaml(tmp_path, "val: images/val\nnames: [a]\n")
    weights = save_checkpoint(tmp_path / "w.pt", build_model("yolov5n.yaml", nc=1))
    assert main(["val", "--weights", str(weights), "--data", str(data), "--imgsz", "64", "--batch-size", "2",
                 "--workers", "0", "--project", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out.splitlines()
    metrics = json.loads((tmp_path / "runs" / "exp" / "metrics.json").read_text())
    expected = [f"skipped {p['file']}: {p['reason']}" for p in metrics["skipped"]]
    assert len(expected) == 2 and all(line in out for line in expected)
    assert f"skipped {img / 'zero.jpg'}: empty file (0 bytes); skipped" in out
    assert f"skipped {lab / '1.txt'}: line 2: class 5 is not an integer in [0, 1); line skipped" in out


def test_check_data_uses_the_same_skipped_line(tmp_path, capsys):
    write_image(tmp_path / "images" / "train" / "ok.jpg")
    (tmp_path / "images" / "train" / "zero.jpg").write_bytes(b"")
    data = data_yaml(tmp_path, "train: images/train\nnames: [a]\n")
    scan = scan_split([tmp_path / "images" / "train"], 1, cache=False)
    assert main(["check-data", "--data", str(data), "--no-cache"]) == 0
    assert f"  {skipped_line(scan.problems[0])}" in capsys.readouterr().out.splitlines()
