"""results.csv keeps one header when epochs log different columns; TensorBoard gets the same scalars (and the
training batch images) when it is installed."""

import csv
from pathlib import Path

import pytest

from yolostitch.engine import results_log
from yolostitch.engine.trainer import train


def read(path: Path) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_a_row_with_new_columns_widens_the_header(tmp_path):
    path = tmp_path / "results.csv"
    results_log.append_row(path, {"epoch": 0, "train/box": 0.5, "lr/backbone": 0.01})
    results_log.append_row(path, {"epoch": 1, "train/box": 0.25, "lr/backbone": 0.005})
    results_log.append_row(path, {"epoch": 2, "train/box": 0.125, "metrics/box_map": 0.3, "lr/backbone": 0.0025})
    results_log.append_row(path, {"epoch": 3, "train/box": 0.0625, "lr/backbone": 0.00125})  # fewer again
    rows = read(path)
    assert rows[0] == ["epoch", "train/box", "metrics/box_map", "lr/backbone"]
    assert rows[1:] == [["0", "0.5", "", "0.01"], ["1", "0.25", "", "0.005"], ["2", "0.125", "0.3", "0.0025"],
                        ["3", "0.0625", "", "0.00125"]]
    results_log.truncate(path, 2)  # --resume from epoch 2: later rows go, the header stays whole
    assert read(path) == rows[:3]


def test_tensorboard_gets_the_results_scalars_and_batch_images(options):
    pytest.importorskip("torch.utils.tensorboard", reason="tensorboard is optional and not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = Path(train(options(epochs=2))["save_dir"])
    events = EventAccumulator(str(run), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    with open(run / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    columns = [c for c in rows[0] if c != "epoch"]
    assert sorted(events.Tags()["scalars"]) == sorted(columns)
    for column in columns:
        logged = {e.step: e.value for e in events.Scalars(column)}
        assert logged == pytest.approx({int(r["epoch"]): float(r[column]) for r in rows}, rel=1e-5, abs=1e-7), column
    assert {"train_batch0", "results"} <= set(events.Tags()["images"])
