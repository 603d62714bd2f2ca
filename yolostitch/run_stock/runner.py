"""Train and validate with the real stock YOLOv5 (the ``yolov5`` package), offline, in a process of its own.

Stock runs as it comes, apart from its network and account hooks, which become no-ops (``_stub_network``),
and with every internet connection refused (``forbid_network``). It runs in a child process because its
``init_seeds`` switches on ``torch.use_deterministic_algorithms`` process-wide and its imports change global
state. The parent calls :func:`run_child`; the child (``python -m yolostitch.run_stock.runner SPEC.json``) calls
:func:`train_stock` and writes the result next to the spec.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any, Callable

from .importer import import_stock_yolo, stock_yaml_dir, stock_gflops, _pkg_resources_stand_in


def forbid_network() -> None:
    """Make any attempt to reach the network fail loudly instead of connecting (or hanging on a timeout).

    Internet sockets refuse to connect and name resolution refuses outright. Unix-domain sockets keep working:
    DataLoader workers hand tensors to the main process over them. Forked workers inherit the patch.
    """
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex

    def refuse(what: str, address: Any):
        raise OSError(f"yolostitch: network access is disabled here ({what} {address!r})")

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


def _stand_ins() -> None:
    """Modules stock's train.py imports but never uses in a local run: the Roboflow client (which talks to
    roboflow.com and is not installed) and ``pkg_resources`` (gone from setuptools >= 81; only its
    ``parse_version`` is used). Added only where the real module is missing."""
    import importlib.util

    if importlib.util.find_spec("roboflow") is None:
        roboflow, core, version = (types.ModuleType(n) for n in ("roboflow", "roboflow.core", "roboflow.core.version"))

        class Unavailable:
            def __init__(self, *args, **kwargs):
                raise RuntimeError("yolostitch: Roboflow is not available in an offline stock run")

        roboflow.Roboflow = version.Version = Unavailable
        roboflow.core, core.version = core, version
        sys.modules.update({"roboflow": roboflow, "roboflow.core": core, "roboflow.core.version": version})
    stand_in = _pkg_resources_stand_in()
    if stand_in is not None:
        sys.modules["pkg_resources"] = stand_in


def _stub_network(run_dir: Path, st: types.ModuleType | None = None) -> None:
    """Turn stock's download/check hooks into no-ops; let torch.load read the checkpoints stock writes here.

    ``st``: the stock training module whose imported hooks are replaced (``yolov5.train`` unless given; stock
    YOLOv5-seg passes ``yolov5.segment.train``, which imports the same hooks)."""
    import torch
    import yolov5.utils.downloads as downloads
    import yolov5.utils.general as general
    import yolov5.utils.plots as plots

    if st is None:
        import yolov5.train as st

    def noop(*args, **kwargs):
        return None

    # check_requirements would pip-check (and install from) requirements.txt, installed with --no-deps on purpose
    st.check_requirements = st.check_git_status = noop
    # attempt_download_from_hub lists Hugging Face Hub files for the "repo" named by weights; never a Hub model
    st.attempt_download_from_hub = downloads.attempt_download_from_hub = noop
    st.attempt_download = lambda file, *args, **kwargs: str(file)
    # check_amp runs a yolov5n.pt test (downloading it): decide as our trainer does, AMP on CUDA only
    st.check_amp = lambda model: next(model.parameters()).device.type == "cuda"
    # check_font downloads Arial.ttf (importer.py already placed a local font); check_online probes 1.1.1.1
    general.check_font = plots.check_font = noop
    general.check_online = lambda: False

    # torch >= 2.6 loads with weights_only=True by default, but stock pickles whole models into last.pt/best.pt
    # and reloads them at the end. Full unpickling is allowed only for files under this run's own directory,
    # i.e. what stock has just written in this process; every other torch.load keeps torch's default.
    real_load, run_dir = torch.load, run_dir.resolve()

    def load(f, *args, **kwargs):
        own_file = isinstance(f, (str, os.PathLike)) and Path(f).resolve().is_relative_to(run_dir)
        if own_file and "weights_only" not in kwargs:
            kwargs["weights_only"] = False
        return real_load(f, *args, **kwargs)

    torch.load = load


def train_stock(spec: dict[str, Any], prepare: Callable | None = None) -> dict[str, Any]:
    """Train stock ``spec["cfg"]`` (a stock YAML name) with ``spec``'s recipe; return the final
    epoch's EMA metrics (as its results.csv logs them), the wall time and the run directory.

    ``spec``: cfg, data (a box-only data YAML), hyp, epochs, batch_size, imgsz, device, workers, seed, project,
    name, and optionally init (a local checkpoint stock starts from, as with its ``--weights``; see
    :mod:`.init_weights`; ``transferred`` then holds stock's own count). ``prepare(module)`` gets stock's
    ``yolov5.train`` module before the run (the benchmarks instrument it).
    """
    import logging

    import_stock_yolo()
    _stand_ins()
    import yolov5.train as st
    from yolov5.utils.callbacks import Callbacks

    logging.getLogger("yolov5").setLevel(logging.INFO)  # the importer quiets stock; show its training log
    run_dir = Path(spec["project"]) / spec.get("name", "stock")
    _stub_network(run_dir)
    cfg = stock_yaml_dir() / Path(spec["cfg"]).name  # stock's own copy of the model YAML
    if not cfg.is_file():
        raise FileNotFoundError(f"stock YOLOv5 has no {cfg.name} (looked in {cfg.parent})")
    if prepare is not None:
        prepare(st)
    logged: dict[str, Any] = {}
    callbacks = Callbacks()
    # on_fit_epoch_end(log_vals, ...): 3 train losses, then P, R, mAP50, mAP50-95 of this epoch's EMA validation
    callbacks.register_action("on_fit_epoch_end", "yolostitch",
                              lambda vals, epoch, *_: logged.update(final=[float(v) for v in vals[3:7]], epoch=epoch))
    # on_train_end(last, best, epoch, results): stock's own re-validation of best.pt (fp16 weights)
    callbacks.register_action("on_train_end", "yolostitch",
                              lambda last, best, epoch, results: logged.update(best_pt=[float(v) for v in results[:4]]))
    opt, transferred = stock_train_options(st, spec, cfg, "stock")
    start = time.perf_counter()
    st.main(opt, callbacks)
    wall = time.perf_counter() - start
    p, r, map50, map_ = logged["final"]
    return {"box_precision": p, "box_recall": r, "box_map50": map50, "box_map": map_, "best_pt": logged.get("best_pt"),
            "wall_s": wall, "save_dir": str(opt.save_dir), "last": str(Path(opt.save_dir) / "weights" / "last.pt"),
            "cfg": str(cfg), "transferred": transferred}


def stock_train_options(train_module: types.ModuleType, spec: dict[str, Any], cfg: str | Path,
                        default_name: str) -> tuple[Any, dict]:
    """Options for stock's ``train.py`` (detection or segment): its own parser's defaults with the comparison's
    settings, starting from ``spec["init"]`` as stock's ``--weights`` would; and what that start transferred."""
    from .init_weights import start_from

    argv, sys.argv = sys.argv, sys.argv[:1]  # parse_opt reads sys.argv: take stock's defaults, then set ours
    try:
        opt = train_module.parse_opt(True)
    finally:
        sys.argv = argv
    init = str(Path(spec["init"]).resolve()) if spec.get("init") else ""  # stock's --weights: where it starts
    transferred = start_from(train_module, init) if init else {}
    settings = {"weights": init, "cfg": str(cfg), "data": spec["data"],
                "hyp": spec["hyp"], "epochs": spec["epochs"], "batch_size": spec["batch_size"],
                "imgsz": spec["imgsz"], "device": spec["device"], "workers": spec["workers"], "seed": spec["seed"],
                "project": spec["project"], "name": spec.get("name", default_name), "exist_ok": True}
    for key, value in settings.items():
        setattr(opt, key, value)
    return opt, transferred


def load_stock_weights(path: str | Path, cfg: str | Path, model_class: str = "DetectionModel"):
    """Stock's own fp32 eval-mode model (``model_class`` of stock's ``models.yolo``) of the stock YAML ``cfg``
    with the weights of its checkpoint ``path``, read by our restricted unpickler (no code from the file runs),
    not by ``torch.load``."""
    from ..weights import read_weights

    weights = read_weights(path)
    model = getattr(import_stock_yolo(), model_class)(str(cfg), nc=len(weights.names))
    model.load_state_dict({k: v.float() for k, v in weights.state.items()}, strict=True)  # anchors included
    return model.float().eval()


def stock_detector(model, imgsz: int) -> Callable:
    """One image (BGR array) -> stock's detections as stock ``detect.py`` makes them: letterbox to a stride
    multiple, forward, NMS (conf 0.25, IoU 0.45, max 1000), boxes scaled back to the image."""
    import numpy as np
    import torch
    from yolov5.utils.augmentations import letterbox
    from yolov5.utils.general import non_max_suppression, scale_boxes

    stride = int(model.stride.max())

    @torch.no_grad()
    def detect(image, path=None):
        padded = letterbox(image, imgsz, stride=stride, auto=True)[0]
        x = torch.from_numpy(np.ascontiguousarray(padded[..., ::-1].transpose(2, 0, 1))).float()[None] / 255
        det = non_max_suppression(model(x)[0], 0.25, 0.45, max_det=1000)[0]
        det[:, :4] = scale_boxes(x.shape[2:], det[:, :4], image.shape)
        return det

    return detect


def stock_costs(model, imgsz: int) -> dict[str, Any]:
    """Parameters and GFLOPs of a stock model, counted before fusing as stock's own summary does."""
    return {"parameters": sum(p.numel() for p in model.parameters()), "gflops": stock_gflops(model, imgsz)}


def child_env() -> dict[str, str]:
    """This environment, with this copy of yolostitch importable in a child (run from a checkout, uninstalled)."""
    root = str(Path(__file__).resolve().parents[2])
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{path}" if path else root}


def run_child(spec: dict[str, Any], log: Path, module: str = "yolostitch.run_stock.runner") -> dict[str, Any]:
    """Run ``python -m module SPEC.json`` with its output in ``log``; return the JSON result it writes.

    Raises RuntimeError with the log's last lines if the child fails."""
    log.parent.mkdir(parents=True, exist_ok=True)
    spec_path = log.with_suffix(".spec.json")
    result_path = log.with_suffix(".result.json")
    result_path.unlink(missing_ok=True)
    spec_path.write_text(json.dumps({**spec, "result": str(result_path)}, indent=2))
    with open(log, "w") as f:
        proc = subprocess.run([sys.executable, "-m", module, str(spec_path)], stdout=f, stderr=subprocess.STDOUT,
                              env=child_env())
    if proc.returncode != 0 or not result_path.exists():
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-30:])
        raise RuntimeError(f"the stock YOLOv5 run failed (exit {proc.returncode}); last lines of {log}:\n{tail}")
    return json.loads(result_path.read_text())


def child_main(spec_path: str, train: Callable, load: Callable, predictor: Callable) -> None:
    """Child process: ``train(spec)`` stock, then measure its final weights (``load(last, cfg)``) the way
    compare.py measures ours, timing ``predictor(fused model, imgsz)`` on the listed images."""
    forbid_network()
    spec = json.loads(Path(spec_path).read_text())
    result = train(spec)
    if spec.get("measure"):
        from ..latency import latency_ms, read_images

        model = load(result["last"], result["cfg"])
        result.update(stock_costs(model, spec["imgsz"]))
        run = predictor(model.fuse(), spec["imgsz"])  # stock's predict scripts fuse Conv+BN, as ours does
        result["latency_ms"] = latency_ms(run, read_images(spec["measure"]), spec["threads"])
    Path(spec["result"]).write_text(json.dumps(result, indent=2))


def _child_main(spec_path: str) -> None:
    child_main(spec_path, train_stock, load_stock_weights, stock_detector)


if __name__ == "__main__":
    _child_main(sys.argv[1])
