"""Early stopping as stock YOLOv5 does it: ties with the best count as no worse, --noval never stops a run, and
the count of stale epochs survives --resume.

The runs are tiny (yolov5n, 64 px, 8 images); where the rule itself is under test, the fitness of each epoch is
set by replacing the trainer's ``fitness`` with a fixed sequence (on 8 synthetic images a model trained for a
few epochs has mAP 0 or noise), so that the expected epochs follow from stock's rule by hand.
"""

from pathlib import Path

import pytest
import torch

from yolostitch.engine import trainer
from yolostitch.engine.early_stop import EarlyStopping
from yolostitch.engine.trainer import train


def fitness_sequence(monkeypatch, values):
    """Make epoch i's fitness values[i]; return the list of epochs scored."""
    scored = []

    def fake(metrics):
        scored.append(len(scored))
        return values[len(scored) - 1]

    monkeypatch.setattr(trainer, "fitness", fake)
    return scored


def test_the_rule_by_hand():
    stopper = EarlyStopping(patience=2)
    assert stopper.update(0.0) and stopper.update(0.0)  # zero-fitness first epochs are no worse (>=)
    assert stopper.update(0.3) and not stopper.stop
    assert not stopper.update(0.2) and not stopper.stop
    assert not stopper.update(None) and stopper.stale == 1  # an epoch without validation: no count
    assert not stopper.update(0.1) and stopper.stop
    never = EarlyStopping(patience=0)  # stock: patience 0 disables it
    for _ in range(5):
        never.update(-1.0 if never.best_fitness else 0.0)
    assert not never.stop
    restored = EarlyStopping(patience=2)
    restored.load_state_dict({"best_fitness": 0.5})  # a checkpoint from before the count was saved
    assert restored.stale == 0 and restored.best_fitness == 0.5


def test_noval_with_patience_trains_every_epoch_and_logs_one_table(options):
    """--noval validates only after the final epoch: the others have no fitness, so --patience 2 must not stop
    a 5-epoch run (it used to stop after epoch 2, every unvalidated epoch scoring as 'no improvement').

    Only that final epoch has metrics/* columns: results.csv still has one header for all rows (it used to have
    the first epoch's columns, and a last row with more values than the header, which pandas refuses)."""
    pd = pytest.importorskip("pandas")
    summary = train(options(noval=True, patience=2, epochs=5))
    assert summary["epochs"] == 5
    run = Path(summary["save_dir"])
    ckpt = torch.load(run / "weights" / "last.pt", weights_only=True)
    assert ckpt["epoch"] == 4 and ckpt["train_state"]["stale"] == 0

    table = pd.read_csv(run / "results.csv")
    assert table["epoch"].tolist() == [0, 1, 2, 3, 4]
    columns = list(table.columns)
    groups = [c.split("/")[0] for c in columns]
    assert groups == sorted(groups, key=["epoch", "train", "metrics", "lr"].index)  # stock's order
    metric_columns = [c for c in columns if c.startswith("metrics/")]
    assert "metrics/box_map" in metric_columns
    assert table[metric_columns].iloc[:4].isna().all().all()  # not validated: empty cells
    for column in metric_columns:  # the final row's values sit under their own names
        assert table[column].iloc[4] == pytest.approx(summary[column.removeprefix("metrics/")], rel=1e-5, abs=1e-6)
    others = [c for c in columns if not c.startswith("metrics/")]
    assert table[others].notna().all().all()
    lr = [c for c in columns if c.startswith("lr/")]
    assert lr and ((table[lr] > 0) & (table[lr] < 0.1)).all().all()  # learning rates, not metrics or losses


def test_ties_with_the_best_are_no_worse(options, monkeypatch):
    """Four epochs of fitness 0 with --patience 2: stock trains all four (``>=``); a strict ``>`` stopped after
    two. best.pt is written at every tie, as stock does."""
    scored = fitness_sequence(monkeypatch, [0.0, 0.0, 0.0, 0.0])
    summary = train(options(patience=2, epochs=4))
    assert summary["epochs"] == 4 and scored == [0, 1, 2, 3]
    best = torch.load(Path(summary["save_dir"]) / "weights" / "best.pt", weights_only=True)
    assert best["epoch"] == 3


def test_stale_epochs_are_saved_and_resumed(options, monkeypatch):
    """Three epochs of falling fitness leave 2 stale epochs in last.pt; resumed with --patience 3 and 6 epochs,
    the run stops after epoch 4 (2 + 1 stale), not after epoch 6 (a count restarted at 0 would need 3 more)."""
    fitness_sequence(monkeypatch, [0.3, 0.2, 0.1])
    summary = train(options(patience=5, epochs=3))
    last = Path(summary["save_dir"]) / "weights" / "last.pt"
    ckpt = torch.load(last, weights_only=True)
    assert ckpt["train_state"]["stale"] == 2 and ckpt["train_state"]["best_fitness"] == pytest.approx(0.3)
    ckpt["opt"].update(epochs=6, patience=3)  # as if the run had been started for 6 epochs with --patience 3
    torch.save(ckpt, last)

    fitness_sequence(monkeypatch, [0.05, 0.05, 0.05])
    resumed = train(options(resume=str(last)))
    assert resumed["epochs"] == 4
    assert torch.load(last, weights_only=True)["train_state"]["stale"] == 3
