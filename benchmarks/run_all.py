"""Run every benchmark and end with one table: each figure against a reference measured in the same run.

    python benchmarks/run_all.py --out benchmarks.md     # the full set (about 30-40 min on a quiet 2-core CPU)
    python benchmarks/run_all.py --quick                 # smoke run: tiny data, 1 epoch (a few minutes)
    python benchmarks/run_all.py --only multitask dataloader --project runs/bench

Each benchmark script runs in its own subprocess (stock YOLOv5's imports change process-wide state, and a fresh
process keeps one benchmark's memory and threads out of the next one's timings) with ``--json``, which writes
its figures; its output goes to a log in the work directory. The figures:

1. train_parity: training throughput of yolov5s (built-in shapes data exported box-only, imgsz 320, batch 16,
   2 workers, 3 epochs from scratch), our train images/s (default precision) over stock YOLOv5 7.0's (target >= 1.6x);
   train CPU time per image, informational.
2. train_parity, same run: the fraction of our training loop spent outside the model's forward and backward
   passes (target <= 15%). **The target is checked with the loss counted as outside** (the conservative
   reading: the loss is not model forward/backward); the fraction with the loss counted as model work is printed
   on the next row, and both again for stock for comparison. Measured from outside the unmodified trainer (see
   ``_step_profile.py``): the trained model's forward, the loss call and ``Tensor.backward`` are timed inside
   the loop, whose total is the time from the first request for a batch to the loop's end.
3. train_parity, same run: peak memory of our training against stock's: the training process's own peak RSS
   (``ru_maxrss``), and the peak of the PSS summed over it and its loader workers (sampled every 2 s).
   Informational (no target).
4. multitask: multi-task training step and inference per image vs the det-only model (targets <= 1.3x and
   <= 1.2x), and vs the three single-task models (informational).
5. feature_cache: a training epoch from the feature cache over one from images with the backbone frozen, per
   image (target <= 0.25x).
6. dataloader: our training loader's images/s over stock's on coco128 (target >= 1.0x); skipped, with a note,
   when ../shared/datasets/coco128 is absent.
7. runtimes: inference (yolov5s at 640, letterbox + forward + NMS, batch 1): our default precision's images/s
   over stock YOLOv5's detect.py inference of the same weights (target >= 1.5x); the latency of our model in torch
   bf16 and of its ONNX export in ONNX Runtime, against torch fp32 measured in the same run (informational).

Stock's side of a row runs with stock's own OpenCV setting (``cv2.setNumThreads(0)``, which our stock importer
undoes after importing stock) and ours with OpenCV's default; the rows' reference column says so. The
feature-cache rows say whether the cache was in the OS page cache (cold: evicted first; warm).

Figures referenced to stock YOLOv5 say how to install it when it is not. A benchmark that fails is reported in
the table with its log, the others still run, and the exit code is 1. Under the table: each benchmark's time,
how much CPU other processes took meanwhile (a warning when the figures are skewed by it) and its own notes.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # also importable from the tests
    sys.path.insert(0, str(HERE))

from _common import Contention, Figure, machine_info, markdown_table, read_json, text_table  # noqa: E402

HEAD = ["figure", "measured", "reference (measured in the same run)", "ratio", "target", "met?"]
CONTENDED_CORES = 0.1  # other processes' mean CPU use above which a benchmark's timings are flagged


@dataclass(frozen=True)
class Bench:
    """A benchmark script and its arguments for the full and the quick (smoke) run."""

    name: str
    script: Path
    full: tuple[str, ...]
    quick: tuple[str, ...]
    work_arg: str | None = None  # the script's option for a work directory kept under --project
    datasets_arg: str | None = None  # the script's option for the real-datasets folder (run_all --datasets)


BENCHMARKS = {b.name: b for b in (
    Bench("train_parity", HERE / "train_parity.py",
          ("--cfg", "yolov5s.yaml", "--imgsz", "320", "--batch-size", "16", "--workers", "2", "--epochs", "3"),
          ("--cfg", "yolov5s.yaml", "--imgsz", "320", "--batch-size", "16", "--workers", "2", "--epochs", "1",
           "--n-train", "32", "--n-val", "16"),
          work_arg="--project"),
    Bench("multitask", HERE / "multitask.py", ("--imgsz", "320", "--batch-size", "16"),
          ("--imgsz", "320", "--batch-size", "4", "--batches", "1", "--repeats", "1")),
    Bench("feature_cache", HERE / "feature_cache.py",
          ("--cfg", "yolov5s.yaml", "--imgsz", "320", "--batch-size", "16", "--workers", "2"),
          ("--cfg", "yolov5s.yaml", "--imgsz", "320", "--batch-size", "16", "--workers", "2", "--n-train", "32")),
    Bench("dataloader", HERE / "dataloader.py", ("--imgsz", "640", "--batch", "16", "--workers", "2"),
          ("--imgsz", "320", "--batch", "16", "--workers", "2", "--epochs", "1"), datasets_arg="--datasets"),
    Bench("runtimes", HERE / "runtimes.py", ("--cfg", "yolov5s.yaml", "--imgsz", "640"),
          ("--cfg", "yolov5n.yaml", "--imgsz", "320", "--images", "3", "--repeats", "1"), datasets_arg="--datasets"),
)}


@dataclass
class Outcome:
    """What one benchmark produced: its figures (or one failure row), notes, time and contention."""

    bench: str
    log: Path | None  # None once a temporary work directory is removed
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    other_cores: float | None = None
    failed: bool = False


def run_one(bench: Bench, work: Path, quick: bool, datasets: Path | None = None) -> Outcome:
    """Run one benchmark script to the end and read its figures; a failure becomes a row, not an exception."""
    out_dir = work / bench.name
    out_dir.mkdir(parents=True, exist_ok=True)
    log, result = out_dir / "log.txt", out_dir / "figures.json"
    result.unlink(missing_ok=True)
    command = [sys.executable, str(bench.script), *(bench.quick if quick else bench.full), "--json", str(result)]
    if bench.work_arg:
        command += [bench.work_arg, str(out_dir / "work")]
    if bench.datasets_arg and datasets:
        command += [bench.datasets_arg, str(datasets.resolve())]
    print(f"[{bench.name}] {shlex.join(command[1:])}\n[{bench.name}] log: {log}", flush=True)
    outcome = Outcome(bench.name, log)
    with open(log, "w") as f, Contention() as contention:
        f.write(f"$ {shlex.join(command)}\n")
        f.flush()
        try:
            returncode = subprocess.run(command, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        cwd=out_dir).returncode
        except OSError as e:
            returncode = -1
            f.write(f"could not start: {e}\n")
    outcome.seconds, outcome.other_cores = contention.seconds, contention.other_cores
    if returncode == 0 and result.is_file():
        try:
            outcome.figures, outcome.notes, _ = read_json(result)
        except (ValueError, KeyError, TypeError) as e:
            outcome.notes = [f"unreadable {result}: {e}"]
    if not outcome.figures:
        why = f"exit {returncode}" if returncode else "no figures written"
        outcome.failed = True
        outcome.figures = [Figure(bench.name, note=f"FAILED ({why}); log: {log}", failed=True)]
    print(f"[{bench.name}] {'FAILED' if outcome.failed else 'done'} in {outcome.seconds / 60:.1f} min", flush=True)
    return outcome


def rows(outcomes: list[Outcome]) -> list[list[str]]:
    return [figure.cells() for o in outcomes for figure in o.figures]


def note_lines(outcomes: list[Outcome]) -> list[str]:
    """Per benchmark: time, log, contention, and the benchmark's own notes (indented under it)."""
    lines = []
    for o in outcomes:
        busy = ""
        if o.other_cores is not None:
            busy = f"; other processes used {o.other_cores:.2f} cores on average"
            if o.other_cores > CONTENDED_CORES:
                busy += " (WARNING: the machine was shared, its timings are skewed)"
        log = f"; log: {o.log}" if o.log else ""
        lines.append(f"{o.bench}: {'FAILED, ' if o.failed else ''}{o.seconds / 60:.1f} min{busy}{log}")
        lines += [f"  {n}" for n in o.notes]
    return lines


def header_lines(command: str, machine: dict, quick: bool) -> list[str]:
    lines = [f"command: {command}",
             f"machine: {machine['date']}; {machine['cpu']}, {machine['cpu_count']} CPUs; {machine['platform']}; "
             f"Python {machine['python']}; torch {machine.get('torch', '?')} with {machine.get('torch_threads', '?')} "
             f"threads{', CUDA available' if machine.get('cuda') else ''}; commit {machine['commit']}"]
    if quick:
        lines.append("QUICK (smoke) run: tiny data, 1 epoch; the figures check the plumbing, not the speed")
    return lines


def render_text(command: str, machine: dict, outcomes: list[Outcome], quick: bool) -> str:
    return "\n".join([*header_lines(command, machine, quick), "", text_table(HEAD, rows(outcomes)), "",
                      *note_lines(outcomes)])


def render_markdown(command: str, machine: dict, outcomes: list[Outcome], quick: bool) -> str:
    head = header_lines(f"`{command}`", machine, quick)
    notes = [f"- {line.strip()}" if not line.startswith("  ") else f"  - {line.strip()}"
             for line in note_lines(outcomes)]
    return "\n".join(["## Benchmark summary", "", *(f"- {line}" for line in head), "",
                      markdown_table(HEAD, rows(outcomes)), "", *notes, ""])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke run: tiny data, 1 epoch, few batches")
    p.add_argument("--only", nargs="+", choices=list(BENCHMARKS), metavar="NAME",
                   help=f"run only these ({', '.join(BENCHMARKS)})")
    p.add_argument("--out", type=Path, help="also write the summary here as Markdown")
    p.add_argument("--project", type=Path, help="work directory, kept (default: a temporary one, removed unless "
                                                 "a benchmark failed)")
    p.add_argument("--datasets", type=Path, help="folder holding coco128 and coco128-seg (default: "
                                                  "../shared/datasets beside the checkout)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = shlex.join(["python", *(sys.argv if argv is None else [str(Path(__file__)), *argv])])
    machine = machine_info()
    work = (args.project or Path(tempfile.mkdtemp(prefix="benchmarks-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    print("\n".join(header_lines(command, machine, args.quick)) + f"\nwork directory: {work}", flush=True)
    outcomes = [run_one(BENCHMARKS[name], work, args.quick, args.datasets) for name in args.only or BENCHMARKS]
    failed = any(o.failed for o in outcomes)
    keep = args.project is not None or failed  # a failure row points at its log
    if not keep:
        shutil.rmtree(work, ignore_errors=True)
        for o in outcomes:
            o.log = None
    print("\n" + render_text(command, machine, outcomes, args.quick))
    if args.out:
        args.out.write_text(render_markdown(command, machine, outcomes, args.quick))
        print(f"\nMarkdown summary written to {args.out}")
    if args.project is None and failed:
        print(f"work directory kept for the failed benchmarks' logs: {work}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
