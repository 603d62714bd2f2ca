"""COCO's own layout and JSON-only data YAMLs: images found beside annotations/, names from the categories,
the same through check-data, val.py and extract.py, and on the real coco-persons data when it is present."""

import json
import pickle
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
from torch import nn

from yolostitch import build_model
from yolostitch.cli import main
from yolostitch.data.check import check_data
from yolostitch.data.coco_source import CocoSource, image_folders
from yolostitch.data.config import DataConfigError, load_data_config
from yolostitch.data.scan import scan_split
from yolostitch.weights import save_checkpoint

# listed out of id order on purpose: classes follow ascending id (person, car, dog), as the labels do
CATEGORIES = [{"id": 18, "name": "dog"}, {"id": 1, "name": "person"}, {"id": 3, "name": "car"}]
SIZES = {"train2017": 3, "val2017": 2}


def write_split(root: Path, split: str, image_dir: Path, json_dir: Path, categories=CATEGORIES,
                prefix: str = "instances") -> dict:
    """``SIZES[split]`` images of 48x64 in ``image_dir`` and their JSON ``<prefix>_<split>.json`` in ``json_dir``;
    image i has i + 1 annotations cycling through the categories (and one crowd one, which is skipped)."""
    rng = np.random.default_rng(len(split))
    image_dir.mkdir(parents=True, exist_ok=True)
    json_dir.mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    for i in range(SIZES[split]):
        name = f"{split}_{i:03d}.jpg"
        cv2.imwrite(str(image_dir / name), rng.integers(0, 255, (48, 64, 3), np.uint8))
        images.append({"id": 100 + i, "file_name": name, "width": 64, "height": 48})
        for j in range(i + 1):
            cat = categories[(i + j) % len(categories)]["id"]
            anns.append({"id": len(anns) + 1, "image_id": 100 + i, "category_id": cat, "iscrowd": 0,
                         "bbox": [4 + 8 * j, 6, 12, 10],
                         "segmentation": [[4 + 8 * j, 6, 16 + 8 * j, 6, 16 + 8 * j, 16]]})
    anns.append({"id": len(anns) + 1, "image_id": 100, "category_id": categories[0]["id"], "iscrowd": 1,
                 "bbox": [0, 0, 10, 10]})
    coco = {"images": images, "annotations": anns, "categories": categories}
    (json_dir / f"{prefix}_{split}.json").write_text(json.dumps(coco))
    return coco


def class_counts(*cocos: dict) -> dict[str, int]:
    """Instances per category name straight from the JSONs (the reference check-data must reproduce)."""
    counts: Counter = Counter()
    for coco in cocos:
        name = {c["id"]: c["name"] for c in coco["categories"]}
        counts.update(name[a["category_id"]] for a in coco["annotations"] if not a["iscrowd"])
    return dict(counts)


def yaml_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "data.yaml"
    path.write_text(text)
    return path


@pytest.fixture()
def coco_layout(tmp_path):
    """COCO's own layout: annotations/instances_{train,val}2017.json beside train2017/ and val2017/."""
    root = tmp_path / "coco"
    cocos = [write_split(root, s, root / s, root / "annotations") for s in SIZES]
    data = yaml_file(tmp_path, f"path: {root}\ntrain: annotations/instances_train2017.json\n"
                               "val: annotations/instances_val2017.json\n")
    return data, root, cocos


def test_coco_layout_json_only_yaml_finds_every_image_and_takes_names_from_categories(coco_layout):
    data, root, cocos = coco_layout
    config = load_data_config(data)
    assert config.names == {0: "person", 1: "car", 2: "dog"} and config.nc == 3
    for split, folder in (("train", "train2017"), ("val", "val2017")):
        labels = scan_split(config.splits[split], config.nc).labels
        assert sorted(Path(lab.im_file) for lab in labels) == sorted((root / folder).glob("*.jpg"))
    s = check_data(data)
    assert s["images"] == sum(SIZES.values())
    assert not [p for p in s["skipped"] if "not found" in p["reason"]]
    assert s["classes"] == class_counts(*cocos)  # names and label classes agree, class by class


def test_json_names_match_the_label_classes(coco_layout):
    """The name of each label's class is the category name of the annotation it came from."""
    data, root, cocos = coco_layout
    config = load_data_config(data)
    labels = scan_split(config.splits["train"], config.nc).labels
    by_file = {Path(lab.im_file).name: [config.names[int(c)] for c in lab.cls] for lab in labels}
    coco = cocos[0]
    cat_name = {c["id"]: c["name"] for c in coco["categories"]}
    file_of = {im["id"]: im["file_name"] for im in coco["images"]}
    expected: dict[str, list[str]] = {}
    for a in coco["annotations"]:
        if not a["iscrowd"]:
            expected.setdefault(file_of[a["image_id"]], []).append(cat_name[a["category_id"]])
    assert {k: v for k, v in by_file.items() if v} == expected


@pytest.mark.parametrize("layout", ["images_split", "beside_json"])
def test_other_usual_places(tmp_path, layout):
    root = tmp_path / "ds"
    if layout == "images_split":  # <root>/images/<split>, JSON in annotations/
        coco = write_split(root, "val2017", root / "images" / "val2017", root / "annotations")
        value = "annotations/instances_val2017.json"
    else:  # the JSON inside its image folder (the layout read before COCO's own)
        coco = write_split(root, "val2017", root / "pics", root / "pics")
        value = "pics/instances_val2017.json"
    s = check_data(yaml_file(tmp_path, f"path: {root}\nval: {value}\n"))
    assert s["images"] == SIZES["val2017"] and s["classes"] == class_counts(coco)


def test_explicit_images_folder_as_a_mapping_and_in_a_list(tmp_path):
    root = tmp_path / "ds"
    train = write_split(root, "train2017", root / "photos" / "a", root / "labels_json")
    val = write_split(root, "val2017", root / "photos" / "b", root / "labels_json")
    data = yaml_file(tmp_path, f"path: {root}\n"
                               "train: {json: labels_json/instances_train2017.json, images: photos/a}\n"
                               "val:\n  - {json: labels_json/instances_val2017.json, images: photos/b}\n")
    config = load_data_config(data)
    assert isinstance(config.splits["train"][0], CocoSource)
    assert config.splits["train"][0].images == root / "photos" / "a"
    s = check_data(data)
    assert s["images"] == 5 and s["classes"] == class_counts(train, val)


def test_not_found_report_names_the_folders_searched(tmp_path):
    root = tmp_path / "ds"
    write_split(root, "val2017", root / "elsewhere", root / "annotations")
    scan = scan_split(load_data_config(yaml_file(tmp_path, f"path: {root}\nval: annotations/instances_val2017.json\n"
                                                           "names: [person, car, dog]\n")).splits["val"], 3)
    assert not scan.labels
    summary = [p for p in scan.problems if p.file.endswith("instances_val2017.json") and "searched" in p.reason]
    assert len(summary) == 1
    reason = summary[0].reason
    for folder in (root / "annotations", root / "val2017", root / "images" / "val2017"):
        assert str(folder) in reason
    assert "images: FOLDER" in reason  # says how to name the folder


def test_explicit_folder_is_the_only_one_searched(tmp_path):
    json_path = tmp_path / "annotations" / "instances_val2017.json"
    assert image_folders(json_path, tmp_path / "x") == [str(tmp_path / "x")]
    folders = image_folders(json_path, None, tmp_path)
    assert folders.index(str(tmp_path / "val2017")) < folders.index(str(tmp_path))  # split folder before the root
    assert len(set(folders)) == len(folders)


def test_coco_source_survives_pickling(coco_layout):
    data, root, _ = coco_layout
    source = load_data_config(data).splits["val"][0]
    again = pickle.loads(pickle.dumps(source))
    assert again == source and again.root == source.root and again.images is None
    assert getattr(source.parent, "root", None) is None  # derived paths carry nothing


def test_categories_that_disagree_are_an_error(tmp_path):
    root = tmp_path / "ds"
    write_split(root, "train2017", root / "train2017", root / "annotations")
    write_split(root, "val2017", root / "val2017", root / "annotations", categories=CATEGORIES[:2])
    data = yaml_file(tmp_path, f"path: {root}\ntrain: annotations/instances_train2017.json\n"
                               "val: annotations/instances_val2017.json\n")
    with pytest.raises(DataConfigError, match="disagree") as e:
        load_data_config(data)
    assert "instances_train2017.json" in str(e.value) and "instances_val2017.json" in str(e.value)
    named = yaml_file(tmp_path, data.read_text() + "names: [person, car, dog]\n")
    assert load_data_config(named).nc == 3  # given names are taken as they are


def test_nc_and_missing_names_errors(coco_layout, tmp_path):
    data, root, _ = coco_layout
    with pytest.raises(DataConfigError, match="nc is 5 but the categories"):
        load_data_config(yaml_file(tmp_path, data.read_text() + "nc: 5\n"))
    assert load_data_config(yaml_file(tmp_path, data.read_text() + "nc: 3\n")).names[2] == "dog"
    (root / "list.txt").write_text("train2017/train2017_000.jpg\n")
    mixed = f"path: {root}\ntrain: list.txt\nval: annotations/instances_val2017.json\n"
    with pytest.raises(DataConfigError, match="every split is a COCO .json"):
        load_data_config(yaml_file(tmp_path, mixed))


def test_bad_split_mapping_is_an_error(coco_layout, tmp_path):
    data, root, _ = coco_layout
    with pytest.raises(DataConfigError, match=r"'val' given as a mapping takes 'json'.*\['image', 'json'\]"):
        load_data_config(yaml_file(tmp_path, f"path: {root}\nval: {{json: annotations/instances_val2017.json, "
                                             "image: val2017}\n"))
    with pytest.raises(DataConfigError, match=r"'val.images' path .*nowhere not found"):
        load_data_config(yaml_file(tmp_path, f"path: {root}\nval: {{json: annotations/instances_val2017.json, "
                                             "images: nowhere}\n"))


def test_val_cli_on_a_json_only_yaml(coco_layout, tmp_path):
    data, root, cocos = coco_layout
    weights = save_checkpoint(tmp_path / "w.pt", build_model("yolov5n.yaml", nc=3))
    assert main(["val", "--weights", str(weights), "--data", str(data), "--imgsz", "64", "--batch-size", "2",
                 "--project", str(tmp_path / "runs"), "--workers", "0"]) == 0
    metrics = json.loads((tmp_path / "runs" / "exp" / "metrics.json").read_text())
    assert metrics["images"] == SIZES["val2017"]
    assert metrics["instances"] == sum(class_counts(cocos[1]).values())


class MeanPool(nn.Module):
    """A parameter-free extractor: 8x average-pooled pixels (enough to write a cache)."""

    spec, weights_hash, normalise = "test:meanpool", "0123456789abcdef", "none"

    def contract(self):
        return {"p8": {"channels": 3, "stride": 8}}

    def forward(self, x):
        return {"p8": nn.functional.avg_pool2d(x, 8)}


def test_extract_on_a_json_only_yaml(coco_layout, tmp_path):
    from yolostitch.extract.writer import write_cache

    data, root, _ = coco_layout
    summary = write_cache(MeanPool(), str(data), tmp_path / "cache", imgsz=64, batch_size=4, workers=0)
    assert summary["images"] == sum(SIZES.values()) and summary["written"] == summary["images"]


COCO_PERSONS = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "coco-persons"
PERSONS_YAML = """path: {root}
train: annotations/person_keypoints_train2017.json
val: annotations/person_keypoints_train2017.json
kpt_shape: [17, 3]
flip_idx: [0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15]
"""


def test_check_data_on_the_real_coco_persons(tmp_path, capsys):
    json_path = COCO_PERSONS / "annotations" / "person_keypoints_train2017.json"
    if not json_path.is_file():
        pytest.skip("../shared/datasets/coco-persons is absent (real data is only available in the dev workspace)")
    coco = json.loads(json_path.read_text())
    data = yaml_file(tmp_path, PERSONS_YAML.format(root=COCO_PERSONS))
    assert main(["check-data", "--data", str(data), "--no-cache"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    on_disk = sorted(p.name for p in (COCO_PERSONS / "train2017").glob("*.jpg"))
    assert sorted(im["file_name"] for im in coco["images"]) == on_disk  # every listed image is there ...
    assert summary["images"] == len(on_disk)  # ... and check-data finds every one
    assert not [p for p in summary["skipped"] if "not found" in p["reason"]]
    people = [a for a in coco["annotations"] if not a["iscrowd"]]
    assert summary["classes"] == {"person": len(people)}
    assert summary["keypoint_instances"] == sum(a["num_keypoints"] > 0 for a in people)


COCO_KEYPOINTS = ["nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
                  "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
                  "right_knee", "left_ankle", "right_ankle"]  # COCO's person category, in its order
COCO_FLIP_IDX = [0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15]  # ultralytics' coco-pose.yaml


def test_kpt_shape_and_flip_idx_from_the_coco_keypoint_names(tmp_path):
    """A YAML that leaves out kpt_shape and flip_idx gets them from the JSON's keypoint names (COCO's give the
    flip_idx every COCO pose YAML writes out); what the YAML gives wins; names without a mirror give none."""
    from yolostitch.data.config import mirrored_pairs

    root = tmp_path / "coco"
    for split in SIZES:
        write_split(root, split, root / split, root / "annotations", prefix="person_keypoints",
                    categories=[{"id": 1, "name": "person", "keypoints": COCO_KEYPOINTS,
                                 "skeleton": [[16, 14], [14, 12], [6, 7]]}])  # COCO counts keypoints from 1
    text = f"path: {root}\ntrain: annotations/person_keypoints_train2017.json\nval: annotations/person_keypoints_val2017.json\n"
    config = load_data_config(yaml_file(tmp_path, text))
    assert config.kpt_shape == [17, 3] and config.flip_idx == COCO_FLIP_IDX
    assert config.raw["flip_idx"] == COCO_FLIP_IDX  # where the tasks read their options
    assert config.raw["skeleton"] == [[15, 13], [13, 11], [5, 6]]  # 0-based, for drawing
    given = load_data_config(yaml_file(tmp_path, text + "kpt_shape: [17, 3]\nflip_idx: " + str(list(range(17))) + "\n"))
    assert given.flip_idx == list(range(17))
    assert mirrored_pairs(["head", "Left hand", "Right hand"]) == [0, 2, 1]
    assert mirrored_pairs(["head", "left_hand"]) is None  # no right hand to swap with
