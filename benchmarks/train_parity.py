"""Training parity: yolov5n from scratch with our trainer and with stock YOLOv5, one short recipe, side by side.

    python benchmarks/train_parity.py                      # 3 epochs, imgsz 320, batch 16, 2 workers, seed 0
    python benchmarks/train_parity.py --out parity.md      # also write the table as markdown
    python benchmarks/train_parity.py --epochs 1 --n-train 64 --n-val 32   # smoke run (a couple of minutes)

Both runs train ``yolov5n.yaml`` from random weights (stock: ``weights=''`` and its own ``models/yolov5n.yaml``)
on the built-in synthetic shapes data (``data/shapes.yaml``, generated on first use), with the same seed,
epochs, image size, batch size, dataloader workers, device, number of torch threads and hyperparameters
(``data/hyps/hyp.scratch-low.yaml``, whose values equal stock's own file). The shapes labels are multi-task
lines (box + keypoints + polygon) that stock would misread as polygons, so the data is first exported into
the work directory as plain detection data (images copied, labels rewritten as ``cls cx cy w h``); both runs
read that same export through the same data YAML (``nc``/``names``, no ``kpt_shape``).

Each run happens in its own subprocess (stock's ``init_seeds`` switches on ``torch.use_deterministic_algorithms``
process-wide, and its imports change global state), with network access refused in-process (see
``forbid_network``). Printed per run:

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
  interpreter start-up and imports.

Notes under the table give the per-epoch loop times, stock's own end-of-training re-validation of best.pt,
and how much CPU other processes took while each run went (from /proc/stat, minus the run's own CPU time):
on a shared machine, rerun when that warning shows. mAP figures are reproducible run to run (same seed,
CPU); timings are not.

Stock's training runs as it comes, apart from its network and account hooks, which are stubbed
(see ``_stub_stock_network``); logs of both runs are written to the work directory (``--project``, else a
temporary directory, removed at the end unless ``--keep``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS = ("ours", "stock")
if str(ROOT) not in sys.path:  # measure this checkout's yolostitch (an editable install may point elsewhere)
    sys.path.insert(0, str(ROOT))
LABELS = {"ours": "yolostitch", "stock": "stock YOLOv5 7.0"}


# --- shared by both runs --------------------------------------------------------------------------------------


def forbid_network() -> None:
    """Make any attempt to reach the network fail loudly instead of connecting (or hanging on a timeout).

    Internet sockets refuse to connect and name resolution refuses outright. Unix-domain sockets keep working:
    DataLoader workers hand tensors to the main process over them (torch's ``file_descriptor`` sharing
    strategy passes descriptors through multiprocessing's resource sharer, which connects an AF_UNIX socket).
    Forked DataLoader workers inherit the patch.
    """
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex

    def refuse(what, address):
        raise OSError(f"train_parity: network access is disabled in this benchmark ({what} {address!r})")

    def connect(self, address):
        if self.family == getattr(socket, "AF_UNIX", None):
            return real_connect(self, address)
        refuse("connect to", address)

    def connect_ex(self, address):
        if self.family == getattr(socket, "AF_UNIX", None):
            return real_connect_ex(self, address)
        refuse("connect to", address)

    def getaddrinfo(host, *args, **kwargs):
        refuse("name lookup of", host)

    socket.socket.connect = connect
    socket.socket.connect_ex = connect_ex
    socket.getaddrinfo = getaddrinfo


def timed_tqdm(base, count, record):
    """A ``tqdm`` subclass that times its iteration: from the first request for an item until exhaustion.

    Since a generator resumes only when the consumer asks for the next item, this covers the body of the loop
    too. Installed as the ``tqdm`` name of each side's training module, where it wraps only the per-batch loop
    (validation lives in other modules, with their own ``tqdm``). ``record(seconds, images, cpu_seconds)`` runs
    per epoch; ``cpu_seconds`` (None without psutil) covers this process and its dataloader workers.
    """

    class TimedTqdm(base):
        def __iter__(self):
            start, cpu, images = time.perf_counter(), _tree_cpu_s(), 0
            for item in super().__iter__():
                images += count(item)
                yield item
            end_cpu = _tree_cpu_s()
            cpu_s = sum(t - cpu.get(pid, 0.0) for pid, t in end_cpu.items()) if end_cpu else None
            record(time.perf_counter() - start, images, cpu_s)

    return TimedTqdm


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


def finish(spec: dict, result: dict) -> None:
    import torch

    result.update(torch_threads=torch.get_num_threads(),
                  deterministic_algorithms=torch.are_deterministic_algorithms_enabled())
    Path(spec["result"]).write_text(json.dumps(result, indent=2))


# --- our run ----------------------------------------------------------------------------------------------------


def run_ours(spec: dict) -> None:
    set_threads(spec["threads"])
    forbid_network()
    from yolostitch.engine import trainer

    epochs: list[dict] = []
    trainer.tqdm = timed_tqdm(trainer.tqdm, lambda item: int(item[1]["img"].shape[0]),
                              lambda s, n, c: epochs.append({"loop_s": s, "images": n, "cpu_s": c}))
    opt = trainer.TrainOptions(cfg=spec["cfg"], data=spec["data"], hyp=spec["hyp"], weights="", epochs=spec["epochs"],
                               batch_size=spec["batch_size"], imgsz=spec["imgsz"], device=spec["device"],
                               workers=spec["workers"], project=spec["project"], name="ours", exist_ok=True,
                               seed=spec["seed"])
    start = time.perf_counter()
    summary = trainer.train(opt)
    wall = time.perf_counter() - start
    finish(spec, {"map50": summary.get("box_map50"), "map": summary.get("box_map"),
                  "precision": summary.get("box_precision"), "recall": summary.get("box_recall"),
                  "epochs": epochs, "wall_s": wall, "save_dir": summary["save_dir"]})


# --- the stock run ----------------------------------------------------------------------------------------------


def _stock_stand_ins() -> None:
    """Modules stock's train.py imports at import time but never uses in a local, non-Roboflow run.

    ``yolov5.utils.roboflow`` does ``from roboflow import Roboflow`` (and ``roboflow.core.version.Version``);
    the Roboflow client is not installed (nor wanted: it talks to roboflow.com). ``yolov5.utils.loggers`` does
    ``import pkg_resources`` (gone from setuptools >= 81); tests/stock_yolov5.py's stand-in provides the
    ``parse_version`` it uses. Stand-ins are only added where the real module is missing.
    """
    import importlib.util

    import stock_yolov5

    if importlib.util.find_spec("roboflow") is None:
        roboflow = types.ModuleType("roboflow")
        core = types.ModuleType("roboflow.core")
        version = types.ModuleType("roboflow.core.version")

        class Unavailable:
            def __init__(self, *args, **kwargs):
                raise RuntimeError("train_parity: Roboflow is not available in this benchmark")

        roboflow.Roboflow = version.Version = Unavailable
        roboflow.core, core.version = core, version
        sys.modules.update({"roboflow": roboflow, "roboflow.core": core, "roboflow.core.version": version})
    stand_in = stock_yolov5._pkg_resources_stand_in()
    if stand_in is not None:
        sys.modules["pkg_resources"] = stand_in


def _stub_stock_network(run_dir: Path) -> None:
    """Turn stock's download/check hooks into no-ops; let torch.load read stock's own new checkpoints."""
    import torch
    import yolov5.train as st
    import yolov5.utils.downloads as downloads
    import yolov5.utils.general as general
    import yolov5.utils.plots as plots

    def noop(*args, **kwargs):
        return None

    # main(): check_requirements() would pip-check (and install with) requirements.txt, which we installed
    # with --no-deps on purpose; check_git_status is commented out in 7.0.14 but stubbed in case.
    st.check_requirements = st.check_git_status = noop
    # train(): attempt_download_from_hub(weights) imports huggingface_hub and lists the Hub's files for the
    # "repo" named by weights (here ''); no Hub: never a Hub model. attempt_download is unused for weights=''.
    st.attempt_download_from_hub = downloads.attempt_download_from_hub = noop
    st.attempt_download = lambda file, *args, **kwargs: str(file)
    # train(): check_amp() runs a yolov5n.pt inference test, downloading bus.jpg / yolov5n.pt if absent;
    # return what it would decide offline: AMP on CUDA only (as our trainer).
    st.check_amp = lambda model: next(model.parameters()).device.type == "cuda"
    # plots: check_font downloads Arial.ttf into CONFIG_DIR (tests/stock_yolov5.py already placed a copy of
    # matplotlib's DejaVuSans there); check_online probes 1.1.1.1.
    general.check_font = plots.check_font = noop
    general.check_online = lambda: False

    # torch >= 2.6 loads with weights_only=True by default; stock saves whole pickled models (last.pt/best.pt)
    # and at the end strip_optimizer() and attempt_load() torch.load them without weights_only, which fails.
    # Allow full unpickling only for files under this run's own directory, i.e. the checkpoints stock has just
    # written in this process; every other torch.load keeps torch's default.
    real_load = torch.load
    run_dir = run_dir.resolve()

    def load(f, *args, **kwargs):
        own_file = isinstance(f, (str, os.PathLike)) and Path(f).resolve().is_relative_to(run_dir)
        if own_file and "weights_only" not in kwargs:
            kwargs["weights_only"] = False
        return real_load(f, *args, **kwargs)

    torch.load = load


def run_stock(spec: dict) -> None:
    set_threads(spec["threads"])
    forbid_network()
    sys.path.insert(0, str(ROOT / "tests"))  # the offline, shimmed stock YOLOv5 import lives with the tests
    import logging

    import stock_yolov5

    stock_yolov5.import_stock_yolo()
    _stock_stand_ins()
    import yolov5.train as st
    from yolov5.utils.callbacks import Callbacks

    logging.getLogger("yolov5").setLevel(logging.INFO)  # the helper quiets stock for tests; show its training log
    run_dir = Path(spec["project"]) / "stock"
    _stub_stock_network(run_dir)

    epochs: list[dict] = []
    st.tqdm = timed_tqdm(st.tqdm, lambda item: int(item[1][0].shape[0]),
                         lambda s, n, c: epochs.append({"loop_s": s, "images": n, "cpu_s": c}))
    logged: dict = {}
    callbacks = Callbacks()
    # on_fit_epoch_end(log_vals, epoch, best_fitness, fi): log_vals = 3 train losses + (P, R, mAP50, mAP50-95,
    # 3 val losses) + ...; the last call is the final epoch's EMA validation (results.csv's last row).
    callbacks.register_action("on_fit_epoch_end", "train_parity",
                              lambda vals, epoch, *_: logged.update(final=[float(v) for v in vals[3:7]], epoch=epoch))
    # on_train_end(last, best, epoch, results): results of stock's re-validation of best.pt (fp16 weights).
    callbacks.register_action("on_train_end", "train_parity",
                              lambda last, best, epoch, results: logged.update(best_pt=[float(v) for v in results[:4]]))

    argv, sys.argv = sys.argv, sys.argv[:1]  # parse_opt reads sys.argv; take stock's defaults, then set ours
    try:
        opt = st.parse_opt(True)
    finally:
        sys.argv = argv
    for key, value in {"weights": "", "cfg": str(stock_yolov5.stock_yaml_dir() / Path(spec["cfg"]).name),
                       "data": spec["data"], "hyp": spec["hyp"], "epochs": spec["epochs"],
                       "batch_size": spec["batch_size"], "imgsz": spec["imgsz"], "device": spec["device"],
                       "workers": spec["workers"], "seed": spec["seed"], "project": spec["project"],
                       "name": "stock", "exist_ok": True}.items():
        setattr(opt, key, value)
    start = time.perf_counter()
    st.main(opt, callbacks)
    wall = time.perf_counter() - start
    p, r, map50, map_ = logged["final"]
    finish(spec, {"map50": map50, "map": map_, "precision": p, "recall": r, "best_pt": logged.get("best_pt"),
                  "epochs": epochs, "wall_s": wall, "save_dir": str(opt.save_dir)})


# --- the parent: export data, run both, print the table -----------------------------------------------------------


def export_detection(data: str, dest: Path, n_train: int | None, n_val: int | None) -> tuple[Path, dict]:
    """Copy a dataset's train/val images to ``dest`` with box-only label files; return the data YAML and counts."""
    import yaml

    from yolostitch.data.config import load_data_config
    from yolostitch.data.scan import scan_split

    cfg = load_data_config(data)  # generates the shapes data on first use
    counts = {}
    for split, limit in (("train", n_train), ("val", n_val)):
        scan = scan_split(cfg.splits[split], cfg.nc, cfg.kpt_shape)
        for problem in scan.problems:
            print(f"  {split}: skipped {problem.file}: {problem.reason}")
        labels = sorted(scan.labels, key=lambda lab: lab.im_file)[:limit]
        images, label_dir = dest / "images" / split, dest / "labels" / split
        images.mkdir(parents=True, exist_ok=True)
        label_dir.mkdir(parents=True, exist_ok=True)
        for lab in labels:
            src = Path(lab.im_file)
            if (images / src.name).exists():
                raise RuntimeError(f"{data}: two {split} images named {src.name}")
            shutil.copyfile(src, images / src.name)
            lines = [f"{int(c)} {x:.6f} {y:.6f} {w:.6f} {h:.6f}\n" for c, (x, y, w, h) in zip(lab.cls, lab.bboxes)]
            (label_dir / src.with_suffix(".txt").name).write_text("".join(lines))
        counts[split] = {"images": len(labels), "instances": int(sum(len(lab) for lab in labels))}
    data_yaml = dest / "data.yaml"
    data_yaml.write_text(yaml.safe_dump({"path": str(dest), "train": "images/train", "val": "images/val",
                                         "nc": cfg.nc, "names": dict(cfg.names)}, sort_keys=False))
    return data_yaml, counts


def _cpu_busy_s() -> float | None:
    """Seconds of CPU time the whole machine has spent busy since boot (Linux /proc/stat), else None."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        user, nice, system, idle, iowait, irq, softirq = map(int, fields[:7])
        return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_child(which: str, spec: dict, work: Path) -> dict:
    spec_path = work / f"{which}.spec.json"
    spec = {**spec, "result": str(work / f"{which}.result.json")}
    spec_path.write_text(json.dumps(spec, indent=2))
    log = work / f"{which}.log"
    print(f"training {LABELS[which]} ... (log: {log})", flush=True)
    start, busy, own = time.perf_counter(), _cpu_busy_s(), _children_cpu_s()
    with open(log, "w") as f:
        command = [sys.executable, str(Path(__file__).resolve()), "--child", which, "--spec", str(spec_path)]
        proc = subprocess.run(command, stdout=f, stderr=subprocess.STDOUT, cwd=work)
    if proc.returncode != 0:
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-40:])
        raise SystemExit(f"{LABELS[which]} run failed (exit {proc.returncode}); last lines of {log}:\n{tail}")
    result = json.loads(Path(spec["result"]).read_text())
    result["process_s"] = time.perf_counter() - start
    # Contention: CPU the machine spent on anything but this run (its process and its dataloader workers),
    # in cores on average over the run. Other jobs on the machine skew the throughput figures.
    result["cpu_s"] = _children_cpu_s() - own
    end_busy = _cpu_busy_s()
    if busy is not None and end_busy is not None:
        result["other_cores"] = max(end_busy - busy - result["cpu_s"], 0.0) / result["process_s"]
    return result


def _ratio(ours, stock) -> str:
    return f"{ours / stock:.2f}x" if ours is not None and stock else "n/a"


def table(results: dict, args, counts: dict, device: str) -> tuple[str, str]:
    """The plain-text table and its markdown version."""
    rows = []
    for which in RUNS:
        r = results[which]
        loop = sum(e["loop_s"] for e in r["epochs"])
        images = sum(e["images"] for e in r["epochs"])
        cpu = [e["cpu_s"] for e in r["epochs"]]
        r["loop_s"], r["images_per_s"] = loop, images / loop if loop else None
        r["cpu_ms_per_image"] = 1000 * sum(cpu) / images if images and None not in cpu else None
        rows.append([LABELS[which], f"{r['map50']:.4f}", f"{r['map']:.4f}", f"{r['images_per_s']:.1f}",
                     "n/a" if r["cpu_ms_per_image"] is None else f"{r['cpu_ms_per_image']:.0f}",
                     f"{loop:.1f}", f"{r['wall_s']:.1f}"])
    o, s = results["ours"], results["stock"]
    rows.append(["ours / stock", _ratio(o["map50"], s["map50"]), _ratio(o["map"], s["map"]),
                 _ratio(o["images_per_s"], s["images_per_s"]), _ratio(o["cpu_ms_per_image"], s["cpu_ms_per_image"]),
                 _ratio(o["loop_s"], s["loop_s"]), _ratio(o["wall_s"], s["wall_s"])])
    head = ["run", "mAP50", "mAP50-95", "train images/s", "train CPU ms/image", "train loop s", "wall s"]
    title = (f"yolov5n from scratch on shapes (boxes only): {counts['train']['images']} train / "
             f"{counts['val']['images']} val images, {args.epochs} epochs, imgsz {args.imgsz}, "
             f"batch {args.batch_size}, {args.workers} workers, seed {args.seed}, {args.threads} torch threads, "
             f"{device}")
    notes = ["per-epoch train loop s: " + "; ".join(
        f"{LABELS[w]} " + ", ".join(f"{e['loop_s']:.1f}" for e in results[w]["epochs"]) for w in RUNS)]
    if s.get("best_pt"):
        notes.append(f"stock's own final re-validation of best.pt (fp16 weights): mAP50 {s['best_pt'][2]:.4f}, "
                     f"mAP50-95 {s['best_pt'][3]:.4f}")
    for w in RUNS:
        r = results[w]
        if r["torch_threads"] != args.threads:
            notes.append(f"WARNING: {LABELS[w]} ended with {r['torch_threads']} torch threads, not {args.threads}")
    if all("other_cores" in results[w] for w in RUNS):
        notes.append("CPU used by other processes during each run (cores, mean): " + ", ".join(
            f"{LABELS[w]} {results[w]['other_cores']:.2f}" for w in RUNS) + f" of {os.cpu_count()}")
        if max(results[w]["other_cores"] for w in RUNS) > 0.1:
            notes.append("WARNING: other processes competed for the CPU; the speed figures are skewed")
    notes.append("torch deterministic algorithms (stock's init_seeds turns them on): " + ", ".join(
        f"{LABELS[w]} {'on' if results[w]['deterministic_algorithms'] else 'off'}" for w in RUNS))
    widths = [max(len(str(row[i])) for row in [head, *rows]) for i in range(len(head))]

    def fmt(row):
        return "  ".join(str(v).ljust(widths[0]) if i == 0 else str(v).rjust(widths[i]) for i, v in enumerate(row))

    text = "\n".join([title, fmt(head), *map(fmt, rows), *notes])
    md = "\n".join([f"**{title}**", "", "| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|",
                    *("| " + " | ".join(row) + " |" for row in rows), "", *(f"- {n}" for n in notes), ""])
    return text, md


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
    p.add_argument("--data", default="shapes.yaml", help="source data YAML, exported as box-only detection data")
    p.add_argument("--hyp", type=Path, default=ROOT / "data" / "hyps" / "hyp.scratch-low.yaml")
    p.add_argument("--n-train", type=int, default=None, help="use only the first N training images (smoke runs)")
    p.add_argument("--n-val", type=int, default=None, help="use only the first N validation images (smoke runs)")
    p.add_argument("--project", type=Path, default=None, help="work directory (default: a temporary one)")
    p.add_argument("--keep", action="store_true", help="keep the temporary work directory")
    p.add_argument("--out", type=Path, default=None, help="also write the table here as markdown")
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
        data_yaml, counts = export_detection(args.data, work / "data", args.n_train, args.n_val)
        spec = {"cfg": args.cfg, "data": str(data_yaml), "hyp": str(args.hyp.resolve()), "epochs": args.epochs,
                "batch_size": args.batch_size, "imgsz": args.imgsz, "device": args.device, "workers": args.workers,
                "seed": args.seed, "threads": args.threads, "project": str(work)}
        results = {w: run_child(w, spec, work) for w in RUNS}
        device = "CUDA" if args.device != "cpu" and torch.cuda.is_available() else "CPU"
        text, md = table(results, args, counts, device)
        print(text)
        (work / "results.json").write_text(json.dumps(results, indent=2))
        if args.out:
            args.out.write_text(md)
            print(f"markdown table written to {args.out}")
        ok = True
    finally:
        if temporary and ok and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"work directory (data export, run dirs, logs): {work}")


if __name__ == "__main__":
    main()
