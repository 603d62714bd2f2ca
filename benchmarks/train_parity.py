"""Training parity: a YOLOv5 model from scratch with our trainer and with stock YOLOv5, one short recipe, side by side.

    python benchmarks/train_parity.py                      # yolov5n, 3 epochs, imgsz 320, batch 16, 2 workers, seed 0
    python benchmarks/train_parity.py --cfg yolov5s.yaml   # what run_all.py measures
    python benchmarks/train_parity.py --out parity.md      # also write the table as markdown
    python benchmarks/train_parity.py --epochs 1 --n-train 64 --n-val 32   # smoke run (a couple of minutes)

Both runs train ``--cfg`` (default ``yolov5n.yaml``) from random weights (ours: the built-in YAML; stock:
``weights=''`` and its own ``models/<cfg>`` file) on the built-in synthetic shapes data, hard variant (``data/shapes-hard.yaml``,
generated on first use), with the same seed, epochs, image size, batch size, dataloader workers, device, number
of torch threads and hyperparameters (``data/hyps/hyp.scratch-low.yaml``, whose values equal stock's own file).
The shapes labels are multi-task lines (box + keypoints + polygon) that stock would misread as polygons, so the
data is first exported into the work directory as plain detection data (images linked, labels rewritten as
``cls cx cy w h``: ``yolostitch.run_stock.data``); both runs read that same export through the same data YAML (``nc``/``names``, no
``kpt_shape``).

Each run happens in its own subprocess (stock's ``init_seeds`` switches on ``torch.use_deterministic_algorithms``
process-wide, and its imports change global state), with network access refused in-process (see
``yolostitch.run_stock.runner.forbid_network``). Printed per run:

* mAP50 and mAP50-95 of the EMA weights after the last epoch, on the validation split, each side's own
  validator (stock: ``val.run`` inside ``train``, as logged in its ``results.csv``; ours: ``metrics.json``);
* train images/s: images delivered by the training loop divided by the time spent in it, summed over all
  epochs. Timed on both sides by the same wrapper around the training loop's progress bar, so it spans the
  whole per-batch loop (waiting for the loader, forward, loss, backward, optimiser step, EMA, per-batch
  logging and the first batches' plots) and excludes setup, validation, checkpointing and stock's final
  re-validation of best.pt;
* train CPU ms/image: CPU time (user + system) of the training process and its dataloader workers over
  the same loop, per image; less sensitive than images/s to other jobs sharing the machine (needs psutil);
* train loop s (the time above), and wall s: the whole in-process training call (setup, label plots, loop,
  per-epoch validation, checkpoints, stock's final strip_optimizer + best.pt validation), without
  interpreter start-up and imports;
* peak RSS MiB: the training process's own peak resident set (``ru_maxrss``: exact, whole process life, loader
  workers excluded); peak PSS MiB: the peak of the summed proportional set size of the training process and its
  loader workers, sampled every 2 s from this (parent) process (needs psutil; see ``_common.PeakMemory``).

Under the table, where each run's training loop time went (``_step_profile``: the same instrumentation on both
sides, from outside the unmodified loops): forward of the model being trained, loss, backward, waiting for
the next batch, and the rest (input conversion, optimizer step, EMA, logging, plots), as fractions of the loop.

Notes under the table also give the per-epoch loop times, stock's own end-of-training re-validation of best.pt,
and how much CPU other processes took while each run went (from /proc/stat, minus the run's own CPU time):
on a shared machine, rerun when that warning shows. mAP figures are reproducible run to run (same seed,
CPU); timings are not.

Stock's training runs as it comes (``yolostitch.run_stock.runner.train_stock``, which ``compare.py --stock`` uses
too), apart from its network and account hooks, which are stubbed; logs of both runs are written to the work directory (``--project``, else a
temporary directory, removed at the end unless ``--keep``). Without stock YOLOv5 installed, only our run is
made and the stock columns say how to install it. ``--json PATH`` also writes the figures for ``run_all.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import (STOCK_CV2, Contention, Figure, PeakMemory, import_stock, markdown_table, max_rss_bytes,
                     stock_opencv_threads, text_table, use_this_checkout, write_json)
from _step_profile import StepProfile

ROOT = Path(__file__).resolve().parents[1]
RUNS = ("ours", "stock")
use_this_checkout()  # measure this checkout's yolostitch (an editable install may point elsewhere)
from yolostitch.run_stock.data import export_detection  # noqa: E402
from yolostitch.run_stock.runner import forbid_network  # noqa: E402
LABELS = {"ours": "yolostitch", "stock": "stock YOLOv5 7.0"}
MiB = 2**20


# --- shared by both runs --------------------------------------------------------------------------------------


def _tree_cpu_s() -> dict[int, float]:
    """CPU seconds (user + system) so far of this process and each of its descendants (dataloader workers)."""
    try:
        import psutil
    except ImportError:
        return {}
    me = psutil.Process()
    times = {}
    for proc in [me, *me.children(recursive=True)]:
        try:
            t = proc.cpu_times()
            times[proc.pid] = t.user + t.system
        except psutil.Error:  # exited meanwhile
            pass
    return times


def set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def finish(spec: dict, result: dict, profile: StepProfile) -> None:
    import gc

    import torch

    gc.collect()  # let finished loaders shut their workers down, so that their peak RSS is reaped too
    result.update(torch_threads=torch.get_num_threads(),
                  deterministic_algorithms=torch.are_deterministic_algorithms_enabled(),
                  epochs=profile.epochs, step=profile.summary(), max_rss=max_rss_bytes())
    Path(spec["result"]).write_text(json.dumps(result, indent=2))


# --- our run ----------------------------------------------------------------------------------------------------


def run_ours(spec: dict) -> None:
    set_threads(spec["threads"])
    forbid_network()
    from yolostitch.engine import trainer

    profile = StepProfile()
    trainer.tqdm = profile.tqdm(trainer.tqdm, lambda item: int(item[1]["img"].shape[0]), _tree_cpu_s)
    profile.wrap_builder(trainer, "_build", "build_model")  # the model trained (not the EMA copy made from it)
    profile.time_loss(getattr(trainer, "ComputeLoss", None))
    profile.time_backward()
    opt = trainer.TrainOptions(cfg=spec["cfg"], data=spec["data"], hyp=spec["hyp"], weights="", epochs=spec["epochs"],
                               batch_size=spec["batch_size"], imgsz=spec["imgsz"], device=spec["device"],
                               workers=spec["workers"], project=spec["project"], name="ours", exist_ok=True,
                               seed=spec["seed"])
    start = time.perf_counter()
    summary = trainer.train(opt)
    wall = time.perf_counter() - start
    finish(spec, {"map50": summary.get("box_map50"), "map": summary.get("box_map"),
                  "precision": summary.get("box_precision"), "recall": summary.get("box_recall"),
                  "wall_s": wall, "save_dir": summary["save_dir"]}, profile)


# --- the stock run ----------------------------------------------------------------------------------------------


def run_stock(spec: dict) -> None:
    set_threads(spec["threads"])
    forbid_network()
    missing = import_stock()  # the offline, shimmed stock YOLOv5 import (yolostitch.run_stock.importer)
    if missing:
        print(missing)
        Path(spec["result"]).write_text(json.dumps({"unavailable": missing}))
        return
    from yolostitch.run_stock.runner import train_stock

    profile = StepProfile()

    def instrument(st) -> None:
        st.tqdm = profile.tqdm(st.tqdm, lambda item: int(item[1][0].shape[0]), _tree_cpu_s)
        profile.wrap_builder(st, "Model")  # train() builds the model it trains with Model(cfg, ...)
        profile.time_loss(st.ComputeLoss)
        profile.time_backward()

    with stock_opencv_threads():  # stock's own cv2.setNumThreads(0), which our importer undoes
        r = train_stock({**spec, "name": "stock"}, prepare=instrument)
    finish(spec, {"map50": r["box_map50"], "map": r["box_map"], "precision": r["box_precision"],
                  "recall": r["box_recall"], "best_pt": r["best_pt"], "wall_s": r["wall_s"], "save_dir": r["save_dir"],
                  "cfg": r["cfg"]}, profile)


# --- the parent: export data, run both, print the table -----------------------------------------------------------


def run_child(which: str, spec: dict, work: Path) -> dict:
    """Run one side in its own process; its result, with the parent's readings (memory, contention) added."""
    spec_path = work / f"{which}.spec.json"
    spec = {**spec, "result": str(work / f"{which}.result.json")}
    spec_path.write_text(json.dumps(spec, indent=2))
    log = work / f"{which}.log"
    print(f"training {LABELS[which]} ... (log: {log})", flush=True)
    with open(log, "w") as f, Contention() as contention:
        command = [sys.executable, str(Path(__file__).resolve()), "--child", which, "--spec", str(spec_path)]
        proc = subprocess.Popen(command, stdout=f, stderr=subprocess.STDOUT, cwd=work)
        with PeakMemory(proc.pid) as memory:
            returncode = proc.wait()
    if returncode != 0:
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-40:])
        raise SystemExit(f"{LABELS[which]} run failed (exit {returncode}); last lines of {log}:\n{tail}")
    result = json.loads(Path(spec["result"]).read_text())
    result["log"] = str(log)
    if "unavailable" in result:
        return result
    result["process_s"], result["cpu_s"], result["peak_pss"] = contention.seconds, contention.own_cpu_s, memory.peak
    # Contention: CPU the machine spent on anything but this run (its process and its dataloader workers),
    # in cores on average over the run. Other jobs on the machine skew the throughput figures.
    if contention.other_cores is not None:
        result["other_cores"] = contention.other_cores
    return result


def derive(r: dict) -> None:
    """Add the per-run figures computed from the per-epoch records (in place)."""
    loop = sum(e["loop_s"] for e in r["epochs"])
    images = sum(e["images"] for e in r["epochs"])
    cpu = [e["cpu_s"] for e in r["epochs"]]
    r["loop_s"], r["images_per_s"] = loop, images / loop if loop else None
    r["cpu_ms_per_image"] = 1000 * sum(cpu) / images if images and None not in cpu else None
    r["peak_rss"] = r["max_rss"]["self"]


def _ratio(ours, stock) -> str:
    return f"{ours / stock:.2f}x" if ours is not None and stock else "n/a"


def _mib(value) -> str:
    return "n/a" if value is None else f"{value / MiB:.0f}"


def step_fractions(step: dict) -> dict[str, float | None]:
    """Fractions of the training loop: each part, and outside forward + backward with / without the loss."""
    loop = step["loop_s"]
    if not loop:
        return {}
    out = {p: (None if step.get(f"{p}_s") is None else step[f"{p}_s"] / loop)
           for p in ("data", "forward", "loss", "backward", "other")}
    if out["forward"] is not None and out["backward"] is not None:
        out["outside"] = 1 - out["forward"] - out["backward"]
        if out["loss"] is not None:
            out["outside_no_loss"] = out["outside"] - out["loss"]
    return out


def step_note(label: str, step: dict) -> str:
    f = step_fractions(step)
    if f.get("outside") is None:
        return f"{label}: step breakdown unavailable (hooked: {', '.join(step['steps_hooked']) or 'nothing'})"
    parts = ", ".join(f"{name} {100 * f[key]:.1f}%" for key, name in (
        ("forward", "forward"), ("loss", "loss"), ("backward", "backward"), ("data", "waiting for data"),
        ("other", "other (input conversion, optimizer, EMA, logging)")) if f.get(key) is not None)
    tail = f" ({100 * f['outside_no_loss']:.1f}% if the loss counts as model work)" if "outside_no_loss" in f else ""
    return (f"{label} training loop, {step['loop_s']:.1f} s: {parts}; outside forward + backward: "
            f"{100 * f['outside']:.1f}%{tail}")


def table(results: dict, args, counts: dict, device: str) -> tuple[str, str, list[str]]:
    """The plain-text table, its markdown version, and the notes under it."""
    runs = [w for w in RUNS if "unavailable" not in results[w]]
    rows = []
    for which in runs:
        r = results[which]
        derive(r)
        rows.append([LABELS[which], f"{r['map50']:.4f}", f"{r['map']:.4f}", f"{r['images_per_s']:.1f}",
                     "n/a" if r["cpu_ms_per_image"] is None else f"{r['cpu_ms_per_image']:.0f}",
                     f"{r['loop_s']:.1f}", f"{r['wall_s']:.1f}", _mib(r["peak_rss"]), _mib(r.get("peak_pss"))])
    if len(runs) == 2:
        o, s = results["ours"], results["stock"]
        rows.append(["ours / stock", *(_ratio(o[k], s[k]) for k in (
            "map50", "map", "images_per_s", "cpu_ms_per_image", "loop_s", "wall_s", "peak_rss", "peak_pss"))])
    head = ["run", "mAP50", "mAP50-95", "train images/s", "train CPU ms/image", "train loop s", "wall s",
            "peak RSS MiB", "peak PSS MiB (+workers)"]
    title = (f"{Path(args.cfg).stem} from scratch on shapes (boxes only): {counts['train']['images']} train / "
             f"{counts['val']['images']} val images, {args.epochs} epochs, imgsz {args.imgsz}, "
             f"batch {args.batch_size}, {args.workers} workers, seed {args.seed}, {args.threads} torch threads, "
             f"{device}")
    notes = [f"{LABELS[w]} not run: {results[w]['unavailable']}" for w in RUNS if w not in runs]
    notes += [step_note(LABELS[w], results[w]["step"]) for w in runs]
    notes.append("per-epoch train loop s: " + "; ".join(
        f"{LABELS[w]} " + ", ".join(f"{e['loop_s']:.1f}" for e in results[w]["epochs"]) for w in runs))
    s = results["stock"]
    if s.get("best_pt"):
        notes.append(f"stock's own final re-validation of best.pt (fp16 weights): mAP50 {s['best_pt'][2]:.4f}, "
                     f"mAP50-95 {s['best_pt'][3]:.4f}")
    for w in runs:
        r = results[w]
        if r["torch_threads"] != args.threads:
            notes.append(f"WARNING: {LABELS[w]} ended with {r['torch_threads']} torch threads, not {args.threads}")
    if all("other_cores" in results[w] for w in runs):
        notes.append("CPU used by other processes during each run (cores, mean): " + ", ".join(
            f"{LABELS[w]} {results[w]['other_cores']:.2f}" for w in runs) + f" of {os.cpu_count()}")
        if max(results[w]["other_cores"] for w in runs) > 0.1:
            notes.append("WARNING: other processes competed for the CPU; the speed figures are skewed")
    notes.append("torch deterministic algorithms (stock's init_seeds turns them on): " + ", ".join(
        f"{LABELS[w]} {'on' if results[w]['deterministic_algorithms'] else 'off'}" for w in runs))
    text = "\n".join([title, text_table(head, rows), *notes])
    md = "\n".join([f"**{title}**", "", markdown_table(head, rows), "", *(f"- {n}" for n in notes), ""])
    return text, md, [title, *notes]


def figures(results: dict, cfg: str) -> list[Figure]:
    """The figures ``run_all.py`` tabulates: throughput and memory against stock, and where our step time goes."""
    o, s = results["ours"], results["stock"]
    missing = s.get("unavailable", "")
    stock = {} if missing else s
    name, ref = Path(cfg).stem, STOCK_CV2
    out = [Figure(f"train throughput, {name} (ours / stock)", o["images_per_s"],
                  stock.get("images_per_s"), "images/s", ref, at_least=1.6, note=missing),
           Figure(f"train CPU time per image, {name} (ours / stock)", o["cpu_ms_per_image"],
                  stock.get("cpu_ms_per_image"), "ms", ref, note=missing)]
    for which, label in (("ours", "ours"), ("stock", "stock")):
        if which == "stock" and missing:
            continue
        step = results[which]["step"]
        f = step_fractions(step)
        loop = step["loop_s"]
        why = "" if f.get("outside") is not None else "model forward or backward not hooked"
        target = {"at_most": 0.15} if which == "ours" else {}
        out.append(Figure(f"step time outside forward+backward, {label} (loss counted outside)",
                          None if why else f["outside"] * loop, loop, "s", "training loop", "fraction",
                          note=why, **target))
        if f.get("outside_no_loss") is not None:
            out.append(Figure(f"step time outside forward+backward+loss, {label}", f["outside_no_loss"] * loop,
                              loop, "s", "training loop", "fraction"))
    out += [Figure(f"peak RSS of the training process, {name} (ours / stock)", o["peak_rss"] / MiB,
                   stock["peak_rss"] / MiB if stock else None, "MiB", ref, note=missing),
            Figure(f"peak PSS of training process + loader workers, {name} (ours / stock)",
                   o["peak_pss"] / MiB if o.get("peak_pss") else None,
                   stock["peak_pss"] / MiB if stock.get("peak_pss") else None, "MiB", ref,
                   note=missing or ("" if o.get("peak_pss") else "needs psutil"))]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--imgsz", type=int, default=320)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="", help="'' (CUDA if available, else CPU), 'cpu', '0', ... for both runs")
    p.add_argument("--threads", type=int, default=None, help="torch threads in both runs (default: torch's default)")
    p.add_argument("--cfg", default="yolov5n.yaml", help="a stock model YAML name (ours built-in, stock's own file)")
    p.add_argument("--data", default="shapes-hard.yaml", help="source data YAML, exported as box-only detection data")
    p.add_argument("--hyp", type=Path, default=ROOT / "data" / "hyps" / "hyp.scratch-low.yaml")
    p.add_argument("--n-train", type=int, default=None, help="use only the first N training images (smoke runs)")
    p.add_argument("--n-val", type=int, default=None, help="use only the first N validation images (smoke runs)")
    p.add_argument("--project", type=Path, default=None, help="work directory (default: a temporary one)")
    p.add_argument("--keep", action="store_true", help="keep the temporary work directory")
    p.add_argument("--out", type=Path, default=None, help="also write the table here as markdown")
    p.add_argument("--json", type=Path, default=None, help="also write the figures here for run_all.py")
    p.add_argument("--child", choices=RUNS, help=argparse.SUPPRESS)
    p.add_argument("--spec", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.child:
        spec = json.loads(args.spec.read_text())
        (run_ours if args.child == "ours" else run_stock)(spec)
        return

    forbid_network()
    import torch

    args.threads = args.threads or torch.get_num_threads()
    temporary = args.project is None
    work = Path(tempfile.mkdtemp(prefix="train-parity-")) if temporary else args.project.resolve()
    work.mkdir(parents=True, exist_ok=True)
    for which in RUNS:  # fresh run dirs (both runs use exist_ok, so stale files would mix in)
        shutil.rmtree(work / which, ignore_errors=True)
    shutil.rmtree(work / "data", ignore_errors=True)
    ok = False
    try:
        print(f"exporting {args.data} as box-only detection data to {work / 'data'}", flush=True)
        data_yaml, counts = export_detection(args.data, work / "data", {"train": args.n_train, "val": args.n_val})
        spec = {"cfg": args.cfg, "data": str(data_yaml), "hyp": str(args.hyp.resolve()), "epochs": args.epochs,
                "batch_size": args.batch_size, "imgsz": args.imgsz, "device": args.device, "workers": args.workers,
                "seed": args.seed, "threads": args.threads, "project": str(work)}
        results = {w: run_child(w, spec, work) for w in RUNS}
        device = "CUDA" if args.device != "cpu" and torch.cuda.is_available() else "CPU"
        text, md, notes = table(results, args, counts, device)
        print(text)
        (work / "results.json").write_text(json.dumps(results, indent=2))
        if args.out:
            args.out.write_text(md)
            print(f"markdown table written to {args.out}")
        write_json(args.json, "train_parity", figures(results, args.cfg), notes,
                   results=results, counts=counts, work=str(work))
        ok = True
    finally:
        if temporary and ok and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"work directory (data export, run dirs, logs): {work}")


if __name__ == "__main__":
    main()
