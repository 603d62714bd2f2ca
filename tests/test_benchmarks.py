"""benchmarks/run_all.py and its helpers: figure arithmetic, the summary table, failure reporting, the step
profile. Fast: no benchmark is timed here (the real scripts only run their skip path)."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import _common  # noqa: E402
import run_all  # noqa: E402
import train_parity  # noqa: E402
from _common import Figure  # noqa: E402
from _step_profile import StepProfile  # noqa: E402


def test_figure_ratio_target_and_cells():
    fast = Figure("throughput", 13.0, 10.0, "images/s", "stock", at_least=1.0)
    assert fast.ratio == pytest.approx(1.3) and fast.met is True
    assert fast.cells() == ["throughput", "13.0 images/s", "10.0 images/s (stock)", "1.30x", "≥ 1.00x", "yes"]
    share = Figure("outside", 3.0, 12.0, "s", "loop", kind="fraction", at_most=0.15)
    assert share.met is False and share.cells()[3:] == ["25.0%", "≤ 15.0%", "NO"]
    info = Figure("memory", 900.0, 1000.0, "MiB", "stock")
    assert info.met is None and info.cells()[4:] == ["—", "—"]


def test_figure_without_reference_or_value_says_why():
    no_stock = Figure("throughput", 13.0, None, "images/s", note=_common.STOCK_MISSING, at_least=1.0)
    cells = no_stock.cells()
    assert cells[2] == _common.STOCK_MISSING and cells[3] == "n/a" and cells[5] == "n/a" and no_stock.met is None
    skipped = Figure("loader", note="skipped: coco128 not found", at_least=1.0)
    assert skipped.cells() == ["loader", "skipped: coco128 not found", "", "", "≥ 1.00x", "skipped"]
    assert Figure("x", note="FAILED", failed=True).cells()[-1] == "FAILED"


def test_json_round_trip(tmp_path):
    figures = [Figure("a", 1.0, 2.0, "s", "ref", at_most=0.6), Figure("b", note="skipped")]
    _common.write_json(tmp_path / "f.json", "bench", figures, ["a note"], extra=1)
    read, notes, details = _common.read_json(tmp_path / "f.json")
    assert read == figures and notes == ["a note"] and details == {"extra": 1}


def _script(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / f"{name}.py"
    path.write_text(f"import sys\nsys.path.insert(0, {str(BENCHMARKS)!r})\n" + textwrap.dedent(body))
    return path


def test_run_all_reports_a_failure_and_runs_the_rest(tmp_path, monkeypatch):
    ok = _script(tmp_path, "ok", """
        from _common import Figure, write_json
        write_json(sys.argv[sys.argv.index("--json") + 1], "ok", [Figure("fine", 1.0, 2.0, "s", "ref", at_most=1.0)],
                   ["ran"])
        """)
    broken = _script(tmp_path, "broken", "raise SystemExit('boom')\n")
    monkeypatch.setattr(run_all, "BENCHMARKS", {"broken": run_all.Bench("broken", broken, (), ()),
                                                "ok": run_all.Bench("ok", ok, (), ())})
    out = tmp_path / "summary.md"
    code = run_all.main(["--quick", "--project", str(tmp_path / "work"), "--out", str(out)])
    assert code == 1
    md = out.read_text()
    assert "run_all.py --quick" in md and "torch" in md and "CPUs" in md  # command line and machine facts
    log = tmp_path / "work" / "broken" / "log.txt"
    assert f"FAILED (exit 1); log: {log}" in md and "boom" in log.read_text()
    assert "| fine | 1.00 s | 2.00 s (ref) | 0.50x | ≤ 1.00x | yes |" in md and "  - ran" in md


def test_dataloader_without_coco128_is_skipped_not_failed(tmp_path):
    """The real script's --json path, on its cheap skip branch."""
    out = tmp_path / "summary.md"
    code = run_all.main(["--quick", "--only", "dataloader", "--datasets", str(tmp_path / "none"),
                         "--project", str(tmp_path / "work"), "--out", str(out)])
    assert code == 0
    md = out.read_text()
    assert md.count("skipped: coco128 / coco128-seg not found") == 4 and "FAILED" not in md


def test_step_fractions_and_figures_without_stock():
    step = {"loop_s": 10.0, "data_s": 0.5, "forward_s": 4.0, "loss_s": 1.0, "backward_s": 4.0, "other_s": 0.5,
            "steps_hooked": ["backward", "forward", "loss"]}
    f = train_parity.step_fractions(step)
    assert f["outside"] == pytest.approx(0.2) and f["outside_no_loss"] == pytest.approx(0.1)
    ours = {"images_per_s": 20.0, "cpu_ms_per_image": 90.0, "step": step, "peak_rss": 2 * 2**30,
            "peak_pss": 3 * 2**30}
    figures = {fig.name: fig for fig in train_parity.figures({"ours": ours, "stock": {"unavailable": "no stock"}},
                                                              "yolov5s.yaml")}
    outside = figures["step time outside forward+backward, ours (loss counted outside)"]
    assert outside.ratio == pytest.approx(0.2) and outside.at_most == 0.15 and outside.met is False
    throughput = figures["train throughput, yolov5s (ours / stock)"]
    assert throughput.reference is None and throughput.note == "no stock" and throughput.cells()[2] == "no stock"
    assert not any("stock" in name.split(",")[-1] and "ours" not in name for name in figures)


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return self.conv(x)


class _Loss:
    def __call__(self, y):
        return y.square().mean()


def test_step_profile_times_only_the_watched_model_inside_the_loop():
    profile = StepProfile()
    model, other = _Net(), _Net()
    try:
        profile.watch(model)
        profile.time_loss(_Loss)
        profile.time_backward()
        bar = profile.tqdm(_PlainBar, lambda item: len(item), dict)
        other(torch.zeros(1, 3, 8, 8))  # outside the loop: not counted
        for x in bar([torch.zeros(2, 3, 16, 16)] * 3):
            _Loss()(model(x)).backward()
            other(x)  # another instance of the class (as the EMA copy): not counted
        summary = profile.summary()
    finally:
        profile.restore()
    assert _Net.__dict__["forward"].__name__ == "forward"  # restored
    assert torch.Tensor.backward.__name__ == "backward" and _Loss.__call__.__name__ == "__call__"
    assert profile.epochs[0]["images"] == 6 and summary["steps_hooked"] == ["backward", "forward", "loss"]
    parts = [summary[f"{p}_s"] for p in ("data", "forward", "loss", "backward")]
    assert all(v > 0 for v in parts[1:]) and sum(parts) + summary["other_s"] == pytest.approx(summary["loop_s"])
    assert summary["other_s"] > 0  # the other model's forward passes land in "other"


class _PlainBar:
    """Stands in for tqdm: iterates its argument."""

    def __init__(self, iterable):
        self.iterable = iterable

    def __iter__(self):
        return iter(self.iterable)


def test_pose_oks_template_from_labels():
    """pose_oks.py: labels in normalised xywh become pixel boxes; a person's own pose in its box scores OKS 1, and
    unlabelled instances are left out."""
    import pose_oks
    from types import SimpleNamespace

    kpts = torch.rand(17, 3).numpy()
    kpts[:, :2] = 0.3 + 0.2 * kpts[:, :2]  # inside the box below
    kpts[:, 2] = 2
    kpts[3, 2] = 0
    unlabelled = kpts.copy()
    unlabelled[:, 2] = 0
    label = SimpleNamespace(shape=(200, 100), im_file="a.jpg", bboxes=[[0.4, 0.4, 0.2, 0.2], [0.5, 0.5, 0.1, 0.1]],
                            keypoints=[kpts, unlabelled])
    persons = pose_oks.labelled_persons([label])
    assert len(persons) == 1
    _, box, pixels = persons[0]
    assert box.tolist() == pytest.approx([30.0, 60.0, 50.0, 100.0])
    template = pose_oks.median_pose(persons)
    placed = box[:2] + template * (box[2:] - box[:2])
    assert pose_oks.oks(pixels, placed, box) == pytest.approx(1.0)
    assert pose_oks.oks(pixels, placed + 5.0, box) < 0.5


def test_pose_split_writes_the_same_images_for_persons_and_all_classes(tmp_path):
    """pose_split.py: the person-keypoint and the all-classes splits hold the same images (the first 64 sorted file
    names train), each image's own annotations, and the 80-class YAML names categories in COCO id order."""
    import json

    import pose_split
    import yaml

    src = tmp_path / "coco-persons"
    (src / "annotations").mkdir(parents=True)
    (src / "train2017").mkdir()
    images = [{"id": i, "file_name": f"{i:03d}.jpg", "width": 10, "height": 10} for i in range(70, 0, -1)]
    person = {"id": 1, "name": "person", "keypoints": ["nose"]}
    cats = [{"id": 3, "name": "car"}, person, {"id": 2, "name": "bicycle"}]  # out of id order on purpose
    anns = [{"id": i, "image_id": i, "category_id": 1 + i % 3, "bbox": [1, 1, 2, 2], "iscrowd": 0}
            for i in range(1, 71)]
    (src / pose_split.KEYPOINTS_JSON).write_text(json.dumps(
        {"images": images, "categories": [person], "annotations": [a for a in anns if a["category_id"] == 1]}))
    instances = {"images": images, "categories": cats, "annotations": anns}
    (src / pose_split.INSTANCES_JSON).write_text(json.dumps(instances))

    persons = pose_split.write_split(src, tmp_path / "p")
    all80 = pose_split.write_split(src, tmp_path / "a", all_classes=True)
    assert persons.name == "persons.yaml" and all80.name == "coco80.yaml"
    assert yaml.safe_load(all80.read_text())["names"] == ["person", "bicycle", "car"]
    assert yaml.safe_load(persons.read_text())["names"] == ["person"]
    for split, count in (("train", 64), ("val", 6)):
        p, a = (json.loads((tmp_path / d / f"{split}.json").read_text()) for d in ("p", "a"))
        names = sorted(im["file_name"] for im in a["images"])
        assert names == sorted(im["file_name"] for im in p["images"]) and len(names) == count
        ids = {im["id"] for im in a["images"]}
        assert {x["image_id"] for x in a["annotations"]} <= ids
        assert len(a["annotations"]) == len(ids)  # one annotation per image in the fixture, all kept
    assert (tmp_path / "a" / "images").resolve() == (src / "train2017").resolve()
