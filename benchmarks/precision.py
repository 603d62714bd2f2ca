"""Throughput of our model under each CPU precision setting: fp32, fp32 + channels-last, bf16 autocast, bf16 +
channels-last (model and input, or the input alone).

    python benchmarks/precision.py                           # yolov5s, imgsz 320, batch 8, train + inference
    python benchmarks/precision.py --cfg yolov5n.yaml --repeats 5

Training figures are forward + backward of the model in train mode on random images (a sum of the outputs as the
loss: the step's cost is the convolutions'); inference is the eval-mode forward at batch 1. Each figure is the
best of ``--repeats`` timed runs of ``--iters`` steps after ``--warmup`` steps: other jobs share the CPU, and the
best run is the one they disturbed least. Images per CPU second (process time) are printed too: on a busy machine
with ``--threads 1`` they measure the arithmetic without the waiting. Nothing here is a target: it is what the ``--amp`` policy was chosen
from (see ``yolostitch/engine/precision.py``).
"""

from __future__ import annotations

import argparse
import contextlib
import time

import torch

from _common import use_this_checkout

use_this_checkout()

from yolostitch.models import build_model  # noqa: E402

SETTINGS = {  # name: (autocast dtype or None, channels-last model, channels-last input)
    "fp32": (None, False, False),
    "fp32 + channels-last": (None, True, True),
    "bf16": (torch.bfloat16, False, False),
    "bf16 + channels-last": (torch.bfloat16, True, True),
    "bf16 + channels-last input only": (torch.bfloat16, False, True),
}


def _outputs_sum(out) -> torch.Tensor:
    if torch.is_tensor(out):
        return out.float().sum()
    if isinstance(out, dict):
        out = list(out.values())
    return sum(_outputs_sum(o) for o in out)


class Setting:
    """One precision setting's model, input and step, built once so the settings can be timed in turns."""

    def __init__(self, cfg: str, imgsz: int, batch: int, train: bool, dtype, cl_model: bool, cl_input: bool):
        torch.manual_seed(0)
        self.model = build_model(cfg, nc=80).train(train)
        if cl_model:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.x = torch.rand(batch, 3, imgsz, imgsz)
        if cl_input:
            self.x = self.x.contiguous(memory_format=torch.channels_last)
        self.dtype, self.train, self.batch, self.best, self.best_cpu = dtype, train, batch, 0.0, 0.0

    def step(self) -> None:
        cast = torch.autocast("cpu", dtype=self.dtype) if self.dtype is not None else contextlib.nullcontext()
        with contextlib.nullcontext() if self.train else torch.inference_mode():
            with cast:
                out = self.model(self.x)
            if self.train:
                _outputs_sum(out).backward()
                self.model.zero_grad(set_to_none=True)

    def time(self, iters: int) -> None:
        start, cpu = time.perf_counter(), time.process_time()
        for _ in range(iters):
            self.step()
        self.best = max(self.best, self.batch * iters / (time.perf_counter() - start))
        self.best_cpu = max(self.best_cpu, self.batch * iters / (time.process_time() - cpu))


def measure(cfg: str, imgsz: int, batch: int, train: bool, warmup: int, iters: int, repeats: int
            ) -> dict[str, tuple[float, float]]:
    """Best (images per wall second, images per CPU second) of every setting over ``repeats`` rounds; each round
    times every setting in turn, so a burst of load from other jobs falls on one setting's run, not on all of
    one setting's runs."""
    settings = {name: Setting(cfg, imgsz, batch, train, *spec) for name, spec in SETTINGS.items()}
    for s in settings.values():
        for _ in range(warmup):
            s.step()
    for _ in range(repeats):
        for s in settings.values():
            s.time(iters)
    return {name: (s.best, s.best_cpu) for name, s in settings.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cfg", default="yolov5s.yaml")
    p.add_argument("--imgsz", type=int, default=320)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--infer-imgsz", type=int, default=640)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--iters", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--only", choices=["train", "infer"], default=None)
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's); with 1, images per "
                   "CPU second are the compute alone, the steadiest figure on a shared machine")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"{args.cfg}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"CPU capability {torch.backends.cpu.get_cpu_capability()}")
    for train in (True, False):
        if args.only and args.only != ("train" if train else "infer"):
            continue
        imgsz, batch = (args.imgsz, args.batch) if train else (args.infer_imgsz, 1)
        iters = args.iters if train else args.iters * 4
        what = "forward + backward" if train else "inference forward"
        best = measure(args.cfg, imgsz, batch, train, args.warmup, iters, args.repeats)
        (base, base_cpu) = best["fp32"]
        for name, (ips, cpu) in best.items():
            print(f"{what}, imgsz {imgsz}, batch {batch}: {name:<32} {ips:6.1f} img/s {ips / base:5.2f}x   "
                  f"{cpu:6.1f} img/CPU-s {cpu / base_cpu:5.2f}x", flush=True)


if __name__ == "__main__":
    main()
