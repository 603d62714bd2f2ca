"""Helpers shared by the benchmark scripts and ``run_all.py``: the figure record every script can write as JSON,
machine facts, CPU-contention and memory readings, and a data-subset writer for smoke runs.

Imported by the scripts as a top-level module (``benchmarks/`` is ``sys.path[0]`` when a script runs), so it
imports nothing heavy at module level: ``run_all.py`` must start without torch.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import resource
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator

ROOT = Path(__file__).resolve().parents[1]
STOCK_MISSING = "stock YOLOv5 not installed: pip install --no-deps yolov5==7.0.14 && pip install pandas seaborn"


def use_this_checkout() -> None:
    """Measure this checkout's yolostitch (an editable install may point elsewhere)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))


def import_stock() -> str | None:
    """Import stock YOLOv5 offline (shimmed); return None, or why it cannot be used (``STOCK_MISSING``).

    Any ImportError counts as missing: ``yolostitch.run_stock.importer`` raises its own ``StockYolov5Unavailable``
    (an ImportError) for the package or one of its import-time dependencies.
    """
    import importlib.util

    use_this_checkout()
    try:
        from yolostitch.run_stock.importer import import_stock_yolo

        import_stock_yolo()
    except ImportError as e:  # the package itself, or one of its import-time dependencies
        return STOCK_MISSING if importlib.util.find_spec("yolov5") is None else f"{STOCK_MISSING} ({e})"
    return None


# --- figures ---------------------------------------------------------------------------------------------------


@dataclass
class Figure:
    """One benchmark figure: a value measured against a reference measured in the same run.

    ``ratio`` is measured / reference; ``kind`` says how it reads ("ratio": 1.12x, "fraction": 23%).
    ``at_most`` / ``at_least`` is the target on that ratio (none: informational). ``note`` says why a value is
    missing (skipped, stock not installed, a failed run).
    """

    name: str
    measured: float | None = None
    reference: float | None = None
    unit: str = ""
    reference_name: str = ""
    kind: str = "ratio"
    at_most: float | None = None
    at_least: float | None = None
    note: str = ""
    failed: bool = False

    @property
    def ratio(self) -> float | None:
        if self.measured is None or not self.reference:
            return None
        return self.measured / self.reference

    @property
    def met(self) -> bool | None:
        """True/False against the target; None when there is no target or no ratio."""
        r = self.ratio
        if r is None or (self.at_most is None and self.at_least is None):
            return None
        return (self.at_most is None or r <= self.at_most) and (self.at_least is None or r >= self.at_least)

    def cells(self) -> list[str]:
        """figure | measured | reference | ratio | target | met? as text."""
        target = " ".join(p for p in (
            f"≤ {self._fmt_ratio(self.at_most)}" if self.at_most is not None else "",
            f"≥ {self._fmt_ratio(self.at_least)}" if self.at_least is not None else "") if p) or "—"
        if self.measured is None:
            return [self.name, self.note or "n/a", "", "", target, "FAILED" if self.failed else "skipped"]
        met = {True: "yes", False: "NO", None: "—" if target == "—" else "n/a"}[self.met]
        reference = _fmt_value(self.reference, self.unit)
        if self.reference is not None and self.reference_name:
            reference += f" ({self.reference_name})"
        elif self.reference is None and self.note:
            reference = self.note
        ratio = "n/a" if self.ratio is None else self._fmt_ratio(self.ratio)
        return [self.name, _fmt_value(self.measured, self.unit), reference, ratio, target, met]

    def _fmt_ratio(self, r: float) -> str:
        return f"{100 * r:.1f}%" if self.kind == "fraction" else f"{r:.2f}x"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Figure:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def _fmt_value(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    text = f"{value:.1f}" if abs(value) >= 10 else f"{value:#.3g}"
    return f"{text} {unit}".strip()


def write_json(path: Path | str | None, benchmark: str, figures: list[Figure], notes: list[str] | None = None,
               **details: Any) -> None:
    """Write a script's figures for ``run_all.py`` (nothing without ``--json``)."""
    if path is None:
        return
    payload = {"benchmark": benchmark, "figures": [asdict(f) for f in figures], "notes": notes or [],
               "details": details}
    Path(path).write_text(json.dumps(payload, indent=2, default=str))


def read_json(path: Path) -> tuple[list[Figure], list[str], dict[str, Any]]:
    payload = json.loads(Path(path).read_text())
    return [Figure.from_dict(f) for f in payload["figures"]], payload.get("notes", []), payload.get("details", {})


# --- tables ----------------------------------------------------------------------------------------------------


def text_table(head: list[str], rows: list[list[str]]) -> str:
    """Columns padded to their widest cell: first column left-aligned, the others right-aligned."""
    widths = [max(len(str(row[i])) for row in [head, *rows]) for i in range(len(head))]

    def line(row: list[str]) -> str:
        return "  ".join(str(v).ljust(widths[i]) if i == 0 else str(v).rjust(widths[i]) for i, v in enumerate(row))

    return "\n".join(line(row) for row in [head, *rows])


def markdown_table(head: list[str], rows: list[list[str]]) -> str:
    def esc(v: str) -> str:
        return str(v).replace("|", "\\|")

    return "\n".join(["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|",
                      *("| " + " | ".join(esc(v) for v in row) + " |" for row in rows)])


# --- machine and contention -------------------------------------------------------------------------------------


def machine_info(with_torch: bool = True) -> dict[str, Any]:
    """What a reader needs to compare runs: date, host CPU, Python, torch and its threads, the checkout."""
    info: dict[str, Any] = {"date": datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds"),
                            "cpu_count": os.cpu_count(), "cpu": _cpu_model(), "platform": platform.platform(),
                            "python": platform.python_version(), "commit": _git_commit()}
    if with_torch:
        import torch

        info.update(torch=torch.__version__, torch_threads=torch.get_num_threads(),
                    cuda=torch.cuda.is_available())
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git_commit() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{sha} (uncommitted changes)" if sha and dirty else sha or "unknown"


def cpu_busy_s() -> float | None:
    """Seconds of CPU time the whole machine has spent busy since boot (Linux /proc/stat), else None."""
    try:
        fields_ = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        user, nice, system, idle, iowait, irq, softirq = map(int, fields_[:7])
        return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def own_cpu_s() -> float:
    """CPU seconds of this process and of its children that have been waited for."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


class Contention:
    """CPU that other processes took while a block ran, in cores on average: timings on a shared machine are
    skewed when it is well above zero. Only waited-for children count as ours, so run subprocesses to the end
    inside the block."""

    def __enter__(self) -> Contention:
        self.start, self.busy, self.own = time.perf_counter(), cpu_busy_s(), own_cpu_s()
        self.seconds, self.own_cpu_s, self.other_cores = 0.0, 0.0, None
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start
        self.own_cpu_s, busy = own_cpu_s() - self.own, cpu_busy_s()
        if self.busy is not None and busy is not None and self.seconds > 0:
            self.other_cores = max(busy - self.busy - self.own_cpu_s, 0.0) / self.seconds


# --- memory ----------------------------------------------------------------------------------------------------


def max_rss_bytes() -> dict[str, int]:
    """Peak resident set of this process, and of its largest waited-for child (e.g. a joined loader worker)."""
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return {"self": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale,
            "largest_child": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * scale}


class PeakMemory:
    """Peak summed PSS (proportional set size) of a process and its descendants, sampled in a thread.

    PSS splits pages shared between processes (the loader workers' copy-on-write view of their parent, shared
    libraries) among them, so the sum is the memory the whole tree holds; summing RSS would count the parent's
    pages once per worker. Reading PSS walks page tables (~20 ms for 1 GB here), hence a sparse interval: the
    peak may miss spikes shorter than it (the per-process ``ru_maxrss`` does not). Needs psutil; else stays None.
    """

    def __init__(self, pid: int, interval: float = 2.0):
        self.pid, self.interval = pid, interval
        self.peak: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        try:
            import psutil
        except ImportError:
            return
        try:
            root = psutil.Process(self.pid)
        except psutil.Error:
            return
        while not self._stop.wait(self.interval):
            total = 0
            try:
                procs = [root, *root.children(recursive=True)]
            except psutil.Error:
                return
            for proc in procs:
                try:
                    total += proc.memory_full_info().pss
                except (psutil.Error, AttributeError):  # exited meanwhile, or no PSS on this platform
                    pass
            self.peak = max(self.peak or 0, total)


# --- data ------------------------------------------------------------------------------------------------------


def subset_data_yaml(data: str, n_train: int, dest: Path) -> Path:
    """A data YAML whose train split is the first ``n_train`` training images of ``data`` (a ``.txt`` list), for
    smoke runs; the val split, classes and keypoint layout are kept."""
    import yaml

    from yolostitch.data.config import load_data_config
    from yolostitch.data.scan import scan_split

    cfg = load_data_config(data)
    labels = sorted(scan_split(cfg.splits["train"], cfg.nc, cfg.kpt_shape).labels, key=lambda lab: lab.im_file)
    dest.mkdir(parents=True, exist_ok=True)
    listing = dest / "train.txt"
    listing.write_text("".join(f"{lab.im_file}\n" for lab in labels[:n_train]))
    raw = {"path": str(cfg.root), "train": str(listing),
           "val": [str(p) for p in cfg.splits.get("val", cfg.splits["train"])], "nc": cfg.nc,
           "names": dict(cfg.names)}
    if cfg.kpt_shape:
        raw.update(kpt_shape=cfg.kpt_shape, flip_idx=cfg.flip_idx)
    for key in ("kpt_sigmas",):
        if key in cfg.raw:
            raw[key] = cfg.raw[key]
    out = dest / "data.yaml"
    out.write_text(yaml.safe_dump(raw, sort_keys=False))
    return out


# --- OS page cache and OpenCV threads: what a timing depends on besides the code --------------------------------


def drop_from_page_cache(paths: Iterable[Path]) -> bool:
    """Ask the kernel to evict ``paths`` from the OS page cache (``posix_fadvise(POSIX_FADV_DONTNEED)`` after a
    ``sync``, so that the just-written pages are clean and can go); False where that call does not exist
    (not Linux), so the caller can say its reads were warm."""
    if not hasattr(os, "posix_fadvise"):
        return False
    os.sync()
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    return True


STOCK_CV2 = "stock YOLOv5 7.0, with its own cv2.setNumThreads(0)"  # the reference label of rows timing stock


@contextlib.contextmanager
def stock_opencv_threads() -> Iterator[int]:
    """Stock's own OpenCV setting while stock's side runs: its ``utils/general.py`` calls
    ``cv2.setNumThreads(0)`` on import, which ``yolostitch.stock.importer`` undoes for the rest of the process
    (ours keeps OpenCV's default). Yields the count ours runs with; restored on exit."""
    import cv2

    ours = cv2.getNumThreads()
    cv2.setNumThreads(0)
    try:
        yield ours
    finally:
        cv2.setNumThreads(ours)
