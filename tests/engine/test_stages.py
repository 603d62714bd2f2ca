"""Staged fine-tuning: parts, stage parsing, frozen parts unchanged (weights and BN), per-part learning rates."""

import csv
from pathlib import Path

import pytest
import torch

from yolostitch import build_model
from yolostitch.data.config import load_data_config
from yolostitch.engine.stages import Stage, parse_stages, stage_at
from yolostitch.engine.trainer import _build, train
from yolostitch.weights import save_checkpoint




def test_parts_of_a_stock_model():
    parts = build_model("yolov5n.yaml").parts()
    assert parts == {"backbone": list(range(10)), "neck": list(range(10, 24)), "det": [24]}


def test_parse_stages_from_flag_and_hyp():
    parts = ["backbone", "neck", "det"]
    stages = parse_stages("det:3,neck+det:2,all", parts)
    assert [(s.train, s.epochs) for s in stages] == [(["det"], 3), (["neck", "det"], 2), ("all", None)]
    assert [stage_at(stages, e).train for e in (0, 2, 3, 4, 5, 50)] == [["det"]] * 2 + [["neck", "det"]] * 2 + ["all"] * 2
    from_hyp = parse_stages([{"epochs": 1, "train": ["det"]}, {"train": "all", "lr_scale": {"backbone": 0.1}}], parts)
    assert from_hyp[1].lr_scale == {"backbone": 0.1} and parse_stages(None, parts)[0].trains("backbone")
    with pytest.raises(ValueError, match=r"unknown parts \['head'\]"):
        parse_stages("head:2,all", parts)


def test_heads_only_stage_then_all_with_a_slower_backbone(tiny_shapes, tmp_path, options):
    torch.manual_seed(0)
    start = _build(options(), load_data_config(tiny_shapes), None)
    init = save_checkpoint(tmp_path / "init.pt", start)
    before = {k: v.clone() for k, v in start.state_dict().items()}

    heads_only = train(options(weights=str(init), epochs=1, stages="det:1,all", name="a"))
    after = torch.load(Path(heads_only["save_dir"]) / "weights" / "last.pt", weights_only=True)["train_state"]["model"]
    for k, v in before.items():
        layer = int(k.split(".")[1])
        if layer < 24 and "num_batches_tracked" not in k:
            assert torch.equal(after[k], v), k  # backbone and neck: weights and BN statistics unchanged
    assert not torch.equal(after["model.24.m.0.weight"], before["model.24.m.0.weight"])

    staged = train(options(weights=str(init), epochs=2, name="b", stages="det:1,all"))
    with open(Path(staged["save_dir"]) / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert float(rows[0]["lr/backbone"]) == 0 and float(rows[0]["lr/neck"]) == 0 and float(rows[0]["lr/det"]) > 0
    assert float(rows[1]["lr/backbone"]) > 0 and float(rows[1]["lr/backbone"]) == pytest.approx(float(rows[1]["lr/det"]))


def test_lr_scale_per_part(tiny_shapes, tmp_path, options):
    hyp = tmp_path / "hyp.yaml"
    base = (Path(__file__).resolve().parents[2] / "data" / "hyps" / "hyp.scratch-low.yaml").read_text()
    hyp.write_text(base + "\nstages:\n  - {train: all, lr_scale: {backbone: 0.1, neck: 0.5}}\n")
    summary = train(options(hyp=str(hyp), epochs=1, name="c"))
    with open(Path(summary["save_dir"]) / "results.csv") as f:
        row = next(csv.DictReader(f))
    assert float(row["lr/backbone"]) == pytest.approx(0.1 * float(row["lr/det"]))
    assert float(row["lr/neck"]) == pytest.approx(0.5 * float(row["lr/det"]))
