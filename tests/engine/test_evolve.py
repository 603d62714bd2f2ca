"""train.py --evolve: mutation inside the search space, parents among the fittest, evolve.csv / hyp_evolve.yaml,
and an evolution that continues where it stopped."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import yaml

from yolostitch.cli import main
from yolostitch.engine.evolve import choose_parent, evolvable, model_tasks, mutate, search_space
from yolostitch.engine.trainer import load_hyp
from yolostitch.errors import FlagError


def test_mutation_stays_in_range_and_keeps_fixed_keys():
    base = load_hyp("hyp.scratch-low.yaml")
    keys = evolvable(base)
    assert "lr0" in keys and "kdist" in keys and "nbs" not in keys  # only values with a range evolve
    # each task brings the ranges of its own loss hyperparameters: a branch's gains evolve only if the model has it
    detector = evolvable(base, search_space(model_tasks("yolov5n.yaml")))
    assert "box" in detector and not {"seg", "kpt", "kdist"} & set(detector)
    assert {"seg", "kpt", "kdist"} <= set(evolvable(base, search_space(model_tasks("yolov5n-multitask.yaml"))))
    rng = np.random.default_rng(0)
    changed = set()
    for _ in range(200):
        child = mutate(base, rng)
        for k in keys:
            gain, low, high = search_space()[k]
            assert low <= child[k] <= high
            if gain == 0:
                assert child[k] == round(base[k], 5)  # iou_t, fl_gamma, perspective, fliplr stay
            if child[k] != round(base[k], 5):
                changed.add(k)
        assert any(child[k] != round(base[k], 5) for k in keys)  # every child differs somewhere
        assert child["degrees"] == 0.0  # a value at 0 stays 0: mutation multiplies
    assert {"lr0", "momentum", "box", "hsv_s", "mosaic"} <= changed
    assert mutate(base, np.random.default_rng(1)) == mutate(base, np.random.default_rng(1))


def test_parents_come_from_the_five_fittest():
    rows = [{"fitness": f, "hyp": {"lr0": f}} for f in (0.1, 0.5, 0.2, 0.9, 0.3, 0.05, 0.6)]
    rng = np.random.default_rng(0)
    drawn = {choose_parent(rows, rng)["fitness"] for _ in range(300)}
    assert drawn <= {0.9, 0.6, 0.5, 0.3, 0.2} and 0.9 in drawn


def test_evolve_writes_its_population_and_continues(tiny_shapes, tmp_path, capsys):
    common = ["train", "--cfg", "yolov5n.yaml", "--data", str(tiny_shapes), "--epochs", "1", "--batch-size", "4",
              "--imgsz", "64", "--workers", "0", "--project", str(tmp_path), "--name", "evo", "--noplots"]
    assert main([*common, "--evolve", "2"]) == 0
    run = tmp_path / "evo"
    rows = list(csv.DictReader(open(run / "evolve.csv")))
    assert [r["generation"] for r in rows] == ["0", "1"]
    base = load_hyp("hyp.scratch-low.yaml")
    assert float(rows[0]["lr0"]) == base["lr0"]  # generation 0 is the --hyp file itself
    assert any(float(rows[1][k]) != pytest.approx(base[k]) for k in evolvable(base))
    assert not (run / "generations" / "0" / "weights").exists()  # generations keep no weights
    best = max(rows, key=lambda r: float(r["fitness"]))
    evolved = yaml.safe_load((run / "hyp_evolve.yaml").read_text())
    assert evolved["lr0"] == pytest.approx(float(best["lr0"]))
    fixed = [k for k in base if k not in evolvable(base)]  # kept as the --hyp file has them
    assert {k: evolved[k] for k in fixed} == {k: base[k] for k in fixed}
    load_hyp(run / "hyp_evolve.yaml")  # a valid --hyp file

    assert main([*common, "--evolve", "3", "--exist-ok"]) == 0  # the same folder: only generation 2 runs
    assert "continuing" in capsys.readouterr().out
    assert [r["generation"] for r in csv.DictReader(open(run / "evolve.csv"))] == ["0", "1", "2"]


def test_evolve_refuses_resume(tmp_path):
    from yolostitch.engine.evolve import evolve
    from yolostitch.engine.trainer import TrainOptions

    with pytest.raises(FlagError, match="--resume"):
        evolve(TrainOptions(resume="last", project=str(tmp_path)), 2)
