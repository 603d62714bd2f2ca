"""Multi-process training: ``torchrun --nproc_per_node 2 train.py`` on the CPU (gloo): the same steps as one
process, rank-0-only outputs, replicas that stay identical (stages, resume, balancer), the sampler's shards,
the --batch-size and --sync-bn errors, and the dataset generator's lock.

Each torchrun launch costs a few seconds of imports per process; the runs are tiny (yolov5n, 64 px, 8 images).
"""

import csv
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from yolostitch import build_model
from yolostitch.data.config import load_data_config
from yolostitch.engine import distributed
from yolostitch.engine.trainer import TrainOptions, _build, train
from yolostitch.weights import save_checkpoint

ROOT = Path(__file__).resolve().parents[2]
BASE_HYP = ROOT / "data" / "hyps" / "hyp.scratch-low.yaml"
# three boxes (class, cx, cy, w, h), mirrored and recoloured per image (see mirrored_labels)
BOXES = [(0, 0.30, 0.30, 0.25, 0.30), (2, 0.65, 0.60, 0.40, 0.35), (4, 0.50, 0.50, 0.10, 0.12)]


def torchrun(*args: str, cwd: Path, nproc: int = 2) -> subprocess.CompletedProcess:
    """``python -m torch.distributed.run --standalone`` (a free rendezvous port of its own) on the CPU."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc), *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=env, timeout=600)


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


def write_hyp(path: Path, **values) -> Path:
    hyp = yaml.safe_load(BASE_HYP.read_text())
    hyp.update(values)
    path.write_text(yaml.safe_dump(hyp, sort_keys=False))
    return path


def options(tmp_path: Path, **kw) -> dict:
    return {"cfg": "yolov5n.yaml", "batch_size": 4, "imgsz": 64, "workers": 0, "project": str(tmp_path / "runs"),
            **kw}


def flags(opts: dict) -> list[str]:
    """train.py's command line for these TrainOptions fields."""
    out = []
    for k, v in opts.items():
        out += [f"--{k.replace('_', '-')}", str(v)]
    return out


def mirrored_labels(i: int) -> str:
    """Image i's labels: BOXES mirrored left-right (odd i) and/or top-bottom (i & 2), classes shifted by i.

    Mirroring swaps which neighbour cells a centre shares (left <-> right, top <-> bottom) and class ids play no
    part in the assignment, so every image has as many targets assigned at every level: a batch's box and cls
    losses (means over its assigned targets) are then the means of any equal shards' losses."""
    lines = []
    for cls, x, y, w, h in BOXES:
        x, y = (1 - x if i & 1 else x), (1 - y if i & 2 else y)
        lines.append(f"{(cls + i) % 5} {x:.2f} {y:.2f} {w:.2f} {h:.2f}\n")
    return "".join(lines)


@pytest.fixture()
def mirrored_data(tmp_path):
    """8 different images (generated shapes) with mirrored copies of the same boxes, and an initial model."""
    from yolostitch.data.shapes import generate_shapes

    root = generate_shapes(tmp_path / "shapes", n_train=8, n_val=0, imgsz=64)
    for i, label in enumerate(sorted((root / "labels" / "train").glob("*.txt"))):
        label.write_text(mirrored_labels(i))
    data = root / "data.yaml"
    data.write_text(f"path: {root}\ntrain: images/train\nval: images/train\n"
                    "names: [circle, triangle, square, star, hexagon]\n")
    torch.manual_seed(0)
    init = save_checkpoint(tmp_path / "init.pt", _build(TrainOptions(cfg="yolov5n.yaml"), load_data_config(data), None))
    return data, init


def test_two_processes_take_the_same_steps_as_one(mirrored_data, tmp_path):
    """One process with batch 4 and two processes with 2 images each (batch 4 in total) take the same optimizer
    steps: the same per-epoch losses in results.csv, and the same weight updates.

    For an exact comparison everything that legitimately differs between the runs is taken out:

    * the order: the single process shuffles with its RandomSampler, the two with a DistributedSampler (another
      permutation). With nbs 8 on 8 images, gradients accumulate over the whole epoch (2 batches of 4) before
      each step, so every step sees the gradient of all 8 images whatever the order or the shard;
    * augmentation (mosaic, HSV, flips, scale, translate) and warmup are off;
    * BatchNorm statistics (a process normalises over its own 2 images): only the Detect head trains
      (``--stages det``), which has no norms, and the frozen backbone and neck run their norms in eval mode;
    * a loss that is not a sum over images: YOLOv5's box and cls terms are means over a batch's targets, which
      the shards' means make up only when the shards hold as many targets; here every image has as many
      targets at every level (see mirrored_labels).

    Then the forward is per image and the loss a sum over images, so the processes' gradients, scaled by the
    world size and averaged by DDP, are exactly one process's gradient. After 3 epochs (3 optimizer steps,
    each over 2 accumulated batches: the first under DDP's no_sync, reduced with the second) the test compares
    the train/* losses and lr/* columns of every epoch (rel 1e-4; results.csv keeps 6 digits), and, for every
    tensor of the trained and of the EMA model, the update from the initial weights: |two - one| <= 1e-4 |one|,
    rel 1e-4 on the steps themselves rather than on weights that barely moved. (On this CPU they agree
    bitwise.) Without the world-size factor in the loss the updates differ by 50 %; with a gradient not
    reduced over the processes, or both processes on the same shard, by 12 %.
    """
    data, init = mirrored_data
    hyp = write_hyp(tmp_path / "hyp.yaml", hsv_h=0.0, hsv_s=0.0, hsv_v=0.0, translate=0.0, scale=0.0, fliplr=0.0,
                    mosaic=0.0, warmup_epochs=0, warmup_min_iters=0, nbs=8)
    opts = options(tmp_path, data=str(data), hyp=str(hyp), weights=str(init), epochs=3, stages="det",
                   amp="off")  # exact arithmetic: bf16 would round a batch of 4 and two shards of 2 differently
    one = Path(train(TrainOptions(**opts, name="one"))["save_dir"])
    out = torchrun(str(ROOT / "train.py"), *flags({**opts, "name": "two"}), cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    two = tmp_path / "runs" / "two"

    rows_one, rows_two = read_csv(one / "results.csv"), read_csv(two / "results.csv")
    assert [r["epoch"] for r in rows_two] == ["0", "1", "2"]  # rank 0 alone appends, once per epoch
    for r1, r2 in zip(rows_one, rows_two):
        for column in [c for c in r1 if c.startswith(("train/", "lr/"))]:
            assert float(r2[column]) == pytest.approx(float(r1[column]), rel=1e-4, abs=1e-12), column

    start = torch.load(init, weights_only=True)["model"]
    ckpt_one, ckpt_two = (torch.load(r / "weights" / "last.pt", weights_only=True) for r in (one, two))
    assert ckpt_two["epoch"] == 2
    moved = 0
    for which in ("train_state", "ema"):
        a = ckpt_one["train_state"]["model"] if which == "train_state" else ckpt_one["model"]
        b = ckpt_two["train_state"]["model"] if which == "train_state" else ckpt_two["model"]
        for k, w0 in start.items():
            if not w0.is_floating_point():
                continue
            step_one, step_two = a[k] - w0, b[k] - w0
            if k.startswith("model.24."):  # the Detect head trained in both runs
                moved += int(step_one.norm() > 0)
            else:  # the rest was frozen in both: weights and BatchNorm statistics untouched
                assert torch.equal(a[k], w0) and torch.equal(b[k], w0), k
            assert (step_two - step_one).norm() <= 1e-4 * step_one.norm(), (which, k)
    assert moved == 12  # 3 convs x (weight, bias) x (trained, EMA) all took steps

    # rank-0-only outputs: one run directory, every file once, one log
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["one", "two"]
    assert {p.name for p in (two / "weights").iterdir()} <= {"last.pt", "best.pt"}
    for name in ("results.png", "labels.jpg", "train_batch0.jpg", "metrics.json", "opt.yaml", "hyp.yaml"):
        assert (two / name).is_file(), name
    assert out.stdout.count("training yolov5n.yaml") == 1 and "batch 4 (2 in each of 2 processes)" in out.stdout
    assert out.stdout.count("done: ") == 1
    assert out.stderr.count("3/3: 100%") == 1  # one progress bar: rank 1's is off


WORKER = """
import os, sys
import torch
from yolostitch.engine import trainer

seen = {}

class Loss(trainer.ComputeLoss):  # catches this process's model and loss balancer
    def __init__(self, model, *args, **kwargs):
        super().__init__(model, *args, **kwargs)
        seen["model"], seen["balance"] = model, self.balance

class Data(trainer.MultiTaskDataset):  # logs the training images this process loads, in order
    def __getitem__(self, index):
        seen.setdefault("indices", []).append(int(index))
        return super().__getitem__(index)

trainer.ComputeLoss, trainer.MultiTaskDataset = Loss, Data
from yolostitch.cli.main import main

code = main(["train", *sys.argv[2:]])
params = {**dict(seen["model"].named_parameters()), "balance.log_vars": seen["balance"].log_vars}
params["indices"] = torch.tensor(seen["indices"])
torch.save({k: v.detach() for k, v in params.items()}, os.path.join(sys.argv[1], "rank" + os.environ["RANK"] + ".pt"))
sys.exit(code)
"""


def test_resumed_replicas_stay_identical_across_a_stage_change(tiny_shapes, tmp_path):
    """A single-process run of the multi-task model stopped after its first epoch of three resumes under
    torchrun: both processes load the checkpoint (weights, optimizer momenta, EMA count, balancer) and train
    epochs 2 and 3, the seg and kpt heads alone, then everything (``--stages seg+kpt:2,all``), on different
    images per process (full augmentation), accumulating 2 batches per step (nbs 8: the first without DDP's
    reduction), with learned task weights (``--balance uncertainty``: parameters outside the model, averaged by
    hand). The seg and kpt terms leave a level's branch without gradient when no target is assigned there, so
    this also runs DDP's search for unused parameters.

    * Sampling: rank r loads positions r, r + 2, ... of epoch e's permutation, ``randperm(8)`` seeded by
      --seed + e (DistributedSampler), a new one every epoch.
    * Replicas: DDP reduces only the parameters that required grad when it was built, so the trainer wraps the
      model anew when a stage changes that set. Without that the backbone's gradients would not be reduced in
      epoch 3; without the resumed optimizer state on every rank, or the balancer's averaging, the processes
      would step differently: so every parameter of the two processes' models, and the balancer's weights, are
      bitwise equal at the end, equal to the saved last.pt, and the backbone did train. (BatchNorm running
      statistics are not compared: DDP copies rank 0's to the others before each forward, so after the last
      one each process holds its own; rank 0's are saved.)
    """
    hyp = write_hyp(tmp_path / "hyp.yaml", warmup_epochs=0, warmup_min_iters=0, nbs=8)
    opts = options(tmp_path, cfg="yolov5n-multitask.yaml", data=str(tiny_shapes), hyp=str(hyp), epochs=1,
                   stages="seg+kpt:2,all", balance="uncertainty")
    run = Path(train(TrainOptions(**opts))["save_dir"])
    last = run / "weights" / "last.pt"
    ckpt = torch.load(last, weights_only=True)
    before = ckpt["train_state"]["model"]
    ckpt["opt"]["epochs"] = 3  # as if stopped after the first of three epochs (its LR factor is 1 either way)
    torch.save(ckpt, last)
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    out = torchrun(str(worker), str(tmp_path), "--resume", str(last), cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count(f"resuming {last} from epoch 2/3") == 1
    assert [r["epoch"] for r in read_csv(run / "results.csv")] == ["0", "1", "2"]

    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    for epoch in (1, 2):
        order = torch.randperm(8, generator=torch.Generator().manual_seed(0 + epoch))
        for r, loaded in enumerate((rank0, rank1)):
            assert loaded["indices"][(epoch - 1) * 4:epoch * 4].tolist() == order[r::2].tolist(), (epoch, r)
    rank0.pop("indices"), rank1.pop("indices")
    assert rank0.keys() == rank1.keys()
    assert len(rank0) == len(dict(build_model("yolov5n-multitask.yaml", nc=5, kpt_shape=[5, 3]).named_parameters())) + 1
    for k in rank0:
        assert torch.equal(rank0[k], rank1[k]), k
    saved = torch.load(last, weights_only=True)["train_state"]
    assert saved["balance"]["log_vars"].abs().sum() > 0 and torch.equal(saved["balance"]["log_vars"],
                                                                        rank0["balance.log_vars"])
    for k, v in saved["model"].items():
        if k in rank0:
            assert torch.equal(v, rank0[k]), k
    assert not torch.equal(rank0["model.0.conv.weight"], before["model.0.conv.weight"])  # trained in epoch 3
    assert rank0["balance.log_vars"].shape == (3,)  # det, seg, kpt


def test_batch_size_must_split_evenly(tiny_shapes, tmp_path):
    out = torchrun(str(ROOT / "train.py"), *flags(options(tmp_path, data=str(tiny_shapes), batch_size=3, epochs=1)),
                   cwd=tmp_path)
    assert out.returncode != 0
    assert "--batch-size 3 is the total batch over all 2 processes (WORLD_SIZE): give a multiple of 2" in out.stderr
    assert not (tmp_path / "runs").exists()  # stopped before anything was written


def test_sync_bn_is_a_clear_error_on_the_cpu(monkeypatch, caplog):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="SyncBatchNorm only on GPUs, not on cpu"):
        distributed.check_sync_bn(True, torch.device("cpu"))
    assert distributed.check_sync_bn(False, torch.device("cpu")) is False
    monkeypatch.setenv("WORLD_SIZE", "1")
    with caplog.at_level(logging.INFO, logger="yolostitch"):
        assert distributed.check_sync_bn(True, torch.device("cpu")) is False
    assert [r.getMessage() for r in caplog.records] == [
        "--sync-bn: a single process has nothing to synchronise; ignored"]


GENERATOR = """
import pathlib, sys, time
from yolostitch.data import shapes

root, log, gate = map(pathlib.Path, sys.argv[1:4])
real = shapes.generate_shapes

def counted(*args, **kwargs):
    with open(log, "a") as f:
        f.write("generated\\n")
    return real(*args, **kwargs)

shapes.generate_shapes = counted
(log.parent / ("ready" + sys.argv[4])).touch()
while not gate.exists():
    time.sleep(0.005)
shapes.ensure_shapes(root, n_train=24, n_val=4, imgsz=64)
"""


def test_processes_generating_the_same_dataset_wait_for_each_other(tmp_path):
    """Two processes ask for the same built-in dataset at the same moment: one generates it under the lock,
    the other waits and finds it complete (without the lock both would clear and write the same files)."""
    from yolostitch.data import shapes

    script, log, gate = tmp_path / "gen.py", tmp_path / "log.txt", tmp_path / "go"
    script.write_text(GENERATOR)
    procs = [subprocess.Popen([sys.executable, str(script), str(tmp_path / "data"), str(log), str(gate), str(i)])
             for i in range(2)]
    deadline = time.time() + 120
    while not all((tmp_path / f"ready{i}").exists() for i in range(2)) and time.time() < deadline:
        time.sleep(0.01)
    gate.touch()
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    assert log.read_text() == "generated\n"
    assert shapes._up_to_date(tmp_path / "data", shapes._arguments(n_train=24, n_val=4, imgsz=64))


FAILING_RANK = """
import os, sys, time
import torch.distributed as dist
from yolostitch.engine import trainer

if os.environ["RANK"] == "1":
    # a teardown that waits for the other processes, as NCCL's can while collectives are in flight
    dist.destroy_process_group = lambda *args, **kwargs: time.sleep(3600)

    class Loss(trainer.ComputeLoss):
        def __call__(self, *args, **kwargs):
            raise RuntimeError("bug in rank 1")

    trainer.ComputeLoss = Loss
from yolostitch.cli.main import main

sys.exit(main(["train", *sys.argv[1:]]))
"""


def test_a_failing_rank_ends_the_job_promptly(tiny_shapes, tmp_path):
    """Rank 1 hits a bug in its first step while rank 0 waits for its gradients in DDP's all-reduce. Rank 1
    must leave at once (log, traceback, exit) rather than tear its process group down cleanly, which can wait
    for the very process that waits for it: here that teardown blocks, as NCCL's can, and the job used to hang
    for the group's 3-hour timeout. Its exit makes torchrun stop rank 0, and the job fails within seconds."""
    worker = tmp_path / "failing.py"
    worker.write_text(FAILING_RANK)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(worker),
           *flags(options(tmp_path, data=str(tiny_shapes), epochs=1))]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=env,
                            start_new_session=True)  # its own process group: a hung job is killed whole below
    try:
        _, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail("the job was still running 120 s after rank 1 failed")
    assert proc.returncode != 0
    assert "rank 1 of 2 failed: leaving the job without waiting for the other processes" in err
    assert "Traceback (most recent call last)" in err and "RuntimeError: bug in rank 1" in err  # a bug: traceback
