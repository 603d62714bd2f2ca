"""``--device``: parsing, and torchrun's LOCAL_RANK mapped onto the listed GPUs, tested without a GPU."""

import os

import pytest
import torch

from yolostitch.engine import distributed
from yolostitch.errors import FlagError
from yolostitch.engine.runs import parse_device, select_device


@pytest.mark.parametrize("device, count, expected", [
    ("", 0, "cpu"), ("", 2, "cuda:0"), ("cpu", 4, "cpu"), (" CPU ", 0, "cpu"),
    ("0", 1, "cuda:0"), ("1", 2, "cuda:1"), ("3", 4, "cuda:3"), ("cuda:1", 2, "cuda:1"), ("cuda", 2, "cuda:0"),
    ("2,3", 4, "cuda:2"), ("cuda:3,cuda:1", 4, "cuda:3"), (" 1 , 0 ", 2, "cuda:1"),
])
def test_one_process_takes_the_first_listed_id(device, count, expected):
    assert parse_device(device, count) == expected


@pytest.mark.parametrize("device, count, ranks", [
    ("2,3", 4, ["cuda:2", "cuda:3"]),  # the case: LOCAL_RANK 1 on GPU 3, not GPU 1
    ("3,1,2", 4, ["cuda:3", "cuda:1", "cuda:2"]),
    ("cuda:1,cuda:0", 2, ["cuda:1", "cuda:0"]),
    ("", 3, ["cuda:0", "cuda:1", "cuda:2"]),  # none listed: every visible GPU, in order
    ("", 0, ["cpu", "cpu"]),  # no GPU: gloo on the CPU
    ("cpu", 2, ["cpu", "cpu", "cpu"]),
])
def test_torchrun_local_rank_takes_its_listed_id(device, count, ranks):
    assert [parse_device(device, count, local_rank=r) for r in range(len(ranks))] == ranks


@pytest.mark.parametrize("device, count, rank, message", [
    ("abc", 2, None, r"--device abc: expected cpu, mps, or comma-separated CUDA device ids"),
    ("0,", 2, None, r"--device 0,: expected"), ("-1", 2, None, "expected"), ("1.0", 2, None, "expected"),
    ("cuda:", 2, None, "expected"), ("0;1", 2, None, "expected"), ("٣", 4, None, "expected"),
    ("0,0", 2, None, r"--device 0,0: a CUDA device is listed more than once"),
    ("2", 2, None, r"--device 2: no CUDA device 2; torch sees 2 GPU\(s\), ids 0-1"),
    ("0,3", 1, None, r"no CUDA device 3; torch sees 1 GPU\(s\), id 0"),
    ("0", 0, None, r"--device 0: CUDA requested but torch sees no CUDA device; use --device cpu"),
    ("cuda", 0, None, "CUDA requested but torch sees no CUDA device"),
    ("mps", 0, None, "--device mps: Apple MPS is not available"),
    ("mps", 0, 0, r"--device mps: torch.distributed trains on CUDA \(NCCL\) or the CPU \(gloo\)"),
    ("2,3", 4, 2, r"--device 2,3: no GPU for the process with LOCAL_RANK 2: 2 listed \(2, 3\); launch at most 2 "
                  r"processes per node \(torchrun --nproc_per_node 2\)"),
    ("", 2, 2, r"--device \(default\): no GPU for the process with LOCAL_RANK 2: 2 visible \(0, 1\)"),
])
def test_bad_devices_are_named(device, count, rank, message):
    with pytest.raises(FlagError, match=message):  # a user error: one line, no traceback
        parse_device(device, count, local_rank=rank)


def test_mps_when_available():
    assert parse_device("mps", 0, mps_available=True) == "mps"


def test_several_ids_in_one_process_say_only_the_first_is_used(caplog):
    assert parse_device("1,2", 4) == "cuda:1"
    assert "trains on cuda:1 only" in caplog.text and "--nproc_per_node 2" in caplog.text


@pytest.fixture()
def four_fake_gpus(monkeypatch):
    """torch sees 4 GPUs; set_device is recorded. CUDA_VISIBLE_DEVICES starts unset and must stay so."""
    current = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: current.append(torch.device(d)))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return current


def test_select_device_is_an_explicit_cuda_id(four_fake_gpus):
    assert select_device("1") == torch.device("cuda:1")
    assert four_fake_gpus[-1] == torch.device("cuda:1")
    assert "CUDA_VISIBLE_DEVICES" not in os.environ  # set after CUDA starts, it would be ignored


def test_torchrun_process_goes_to_its_listed_gpu(four_fake_gpus, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("RANK", "1")
    assert distributed.ddp_device("2,3") == torch.device("cuda:3")
    assert four_fake_gpus[-1] == torch.device("cuda:3")
    assert "CUDA_VISIBLE_DEVICES" not in os.environ
    with pytest.raises(ValueError, match="LOCAL_RANK 1: 1 listed"):
        distributed.ddp_device("2")


def test_timings_wait_for_cuda_work(monkeypatch):
    """CUDA kernels run asynchronously: a timestamp on a CUDA device first waits for the queued work."""
    from yolostitch.engine.runs import synced_clock

    waited = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: waited.append(device))
    synced_clock(torch.device("cpu"))
    assert waited == []
    synced_clock(torch.device("cuda:1"))
    assert waited == [torch.device("cuda:1")]


def test_seeding_asks_for_deterministic_kernels_on_cuda_only(monkeypatch):
    from yolostitch.engine import trainer

    calls = []
    monkeypatch.setattr(torch, "use_deterministic_algorithms", lambda mode, **kw: calls.append((mode, kw)))
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", False)
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    trainer._seed_everything(0, torch.device("cpu"))
    assert calls == [] and "CUBLAS_WORKSPACE_CONFIG" not in os.environ
    trainer._seed_everything(0, torch.device("cuda:0"))
    assert calls == [(True, {"warn_only": True})] and torch.backends.cudnn.deterministic
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
