"""Inference on files: ``detect.py`` / ``yolostitch detect``, and drawing a result on its image.

Sources are local only (an image, a directory, a glob, a ``.txt`` list of paths, or a video file): nothing is
ever downloaded, so URLs, streams and webcams are refused. Each image is letterboxed to a stride multiple
(stock ``detect.py``'s rectangular ``auto`` letterbox), run through the model, and its detections mapped
back to the original image: boxes, masks (at the original resolution) and keypoints.

A result is a plain dict of CPU tensors in original-image pixels::

    {"im_file", "frame" (video frame, 1-based; None for images), "shape" (h0, w0), "input_shape" (h, w),
     "boxes" (n, 4) xyxy, "conf" (n,), cls (n,) int64,     # the detection task's fields
     "masks" (n, h0, w0) bool            # models with an instance-mask head
     "keypoints" (n, K, D) x y [vis]     # models with a keypoint head; vis is a probability
     "image_classes" (nc,)               # models with an image-class head: image-level class probabilities
     ...                                 # each other task's fields (see yolostitch.tasks)
     "save_path", "txt_path"}            # where the drawing / label file went (None if not saved)
"""

from __future__ import annotations

import glob
import math
import re
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import cv2
import numpy as np
import torch
from torch import nn

from ..data.scan import IMAGE_SUFFIXES
from ..tasks import CLASS_FIELD, TASKS, tasks_of
from .draw import rows
from .precision import precision_for, to_float
from ..export.runtime import is_exported, load_exported
from ..errors import FlagError, SetupError
from ..ops.letterbox import letterbox
from .predict import postprocess
from .runs import increment_path, select_device

VIDEO_SUFFIXES = {".asf", ".avi", ".gif", ".m4v", ".mkv", ".mov", ".mp4", ".mpeg", ".mpg", ".ts", ".wmv", ".webm"}
_URL = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)


# ----------------------------------------------------------------------------------------------- sources

def list_sources(source: str | Path) -> list[Path]:
    """The image and video files ``source`` names, in order.

    ``source``: an image or video file, a directory (its images and videos, not recursive), a glob pattern
    (``**`` recurses) or a ``.txt`` file listing one of those per line (relative paths from the list's
    folder when not found from the working directory). Raises ValueError for URLs, streams and webcams (nothing is
    downloaded or opened from a network) and FileNotFoundError, naming the path, for anything missing.
    """
    text = str(source).strip()
    if _URL.match(text):
        raise FlagError(f"--source {text}: URLs and streams are not supported (nothing is downloaded); "
                        "download the file yourself and pass its local path")
    path = Path(text).expanduser()
    if not path.exists() and text.isdigit():
        raise FlagError(f"--source {text}: webcams are not supported; pass an image, directory, glob, .txt list "
                        "or video file")
    if not path.exists() and any(c in text for c in "*?["):
        files = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
        files = [p for p in files if _is_media(p)]
        if not files:
            raise FileNotFoundError(f"--source {text}: no images or videos match this pattern")
        return files
    if not path.exists():
        raise FileNotFoundError(f"--source {text}: no such file or directory")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and _is_media(p))
        if not files:
            raise FileNotFoundError(f"--source {text}: the directory holds no images or videos "
                                    f"({', '.join(sorted(IMAGE_SUFFIXES | VIDEO_SUFFIXES))})")
        return files
    if path.suffix.lower() == ".txt":
        return [f for line in path.read_text().splitlines() if line.strip()
                for f in _listed(line.strip(), path)]
    if not _is_media(path):
        raise FlagError(f"--source {text}: not an image or video file (suffix {path.suffix or 'none'!r})")
    return [path]


def _is_media(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES


def _listed(entry: str, listing: Path) -> list[Path]:
    """The files one line of a ``.txt`` list names (a file, directory or glob; relative to the list's folder
    when not found from the working directory). Lists inside lists are not followed."""
    path = Path(entry).expanduser()
    if not path.is_absolute() and not path.exists() and not _URL.match(entry):
        beside = listing.parent / path
        if beside.exists() or glob.glob(str(beside)):
            entry = str(beside)
    if Path(entry).suffix.lower() == ".txt":
        raise FlagError(f"{listing}: {entry}: a list inside a list is not supported")
    try:
        return list_sources(entry)
    except (FileNotFoundError, ValueError) as e:
        raise type(e)(f"{listing}: {str(e).removeprefix('--source ')}") from None


def _frames(files: Sequence[Path]) -> Iterator[tuple[int, Path, int | None, int, np.ndarray | None, Any]]:
    """(file number, file, video frame (1-based) or None, frames in the video, BGR image, capture) for every
    image and video frame; the image is None for a file that cannot be read."""
    for number, path in enumerate(files, 1):
        if path.suffix.lower() not in VIDEO_SUFFIXES:
            yield number, path, None, 0, cv2.imread(str(path)), None
            continue
        cap = cv2.VideoCapture(str(path))
        try:
            count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else 0
            frame = 0
            while cap.isOpened():
                ok, image = cap.read()
                if not ok:
                    break
                frame += 1
                yield number, path, frame, count, image, cap
            if frame == 0:
                yield number, path, None, 0, None, None
        finally:
            cap.release()


# --------------------------------------------------------------------------------------------- inference

class Detector:
    """A loaded model plus inference settings; ``detector(image_bgr)`` -> one result dict (no files written)."""

    def __init__(self, weights: str | Path | nn.Module, imgsz: int = 640, conf_thres: float = 0.25,
                 iou_thres: float = 0.45, max_det: int = 1000, device: str | torch.device = "",
                 classes: Sequence[int] | None = None, agnostic_nms: bool = False, features: str | Path = "",
                 extractor: str = "", extractor_weights: str = "", amp: str = "auto"):
        self.device = device if isinstance(device, torch.device) else select_device(device)
        self.precision = precision_for(amp, self.device)  # --amp: the forward's autocast (see .precision)
        if isinstance(weights, nn.Module):
            self.model = weights.to(self.device).eval()
        elif is_exported(weights):  # .onnx / .torchscript from export.py: see yolostitch/export/runtime.py
            self.model, self.precision = load_exported(weights, self.device, self.precision)
        else:
            from ..models.fuse import fuse_conv_bn
            from ..weights import load_model

            self.model = load_model(weights, device=self.device)
            fuse_conv_bn(self.model)  # as stock detect.py (a model passed in is left as it is)
        self.tasks = tasks_of(self.model)
        self.anchor = next((t for t in self.tasks if t.anchor), None)
        if self.anchor is None:
            raise FlagError(f"detect needs a model with a detection head; this one has "
                            f"{sorted(getattr(self.model, 'heads', {})) or 'none'}")
        self.names: dict[int, str] = dict(getattr(self.model, "names", {}) or {})
        self.stride = max(int(torch.as_tensor(self.model.stride).max()), 1)
        self.imgsz = math.ceil(imgsz / self.stride) * self.stride
        if self.imgsz != imgsz:
            print(f"WARNING: --imgsz {imgsz} must be a multiple of the max stride {self.stride}, using {self.imgsz}",
                  file=sys.stderr)
        self.conf_thres, self.iou_thres, self.max_det = conf_thres, iou_thres, max_det
        self.classes = None if classes is None else [int(c) for c in classes]
        self.agnostic = agnostic_nms
        self.skeleton = _skeleton_of(self.model)
        from .features import feature_source

        # a FeatureInput model reads cached maps (``features``), runs the user's ``extractor`` or the built-in
        # extractor it was trained with
        self.cache, self.extractor = feature_source(self.model, features, self.imgsz, self.device, extractor,
                                                    extractor_weights)
        if self.cache is not None:
            self.imgsz = self.cache.imgsz  # the maps were made at the cache's size
        self.times = {"preprocess": 0.0, "inference": 0.0, "nms": 0.0}
        self.seen = 0

    @torch.no_grad()
    def __call__(self, image: np.ndarray, im_file: str | Path | None = None) -> dict[str, Any]:
        """Detections on one BGR image; a model reading a feature cache takes the maps cached for ``im_file``."""
        t0 = time.perf_counter()
        if self.cache is not None:
            x, shape, ratio_pad = self._cached_maps(im_file)
        else:
            padded, plan = letterbox(image, self.imgsz, self.stride, auto=True)
            ratio_pad = plan.ratio_pad
            x = torch.from_numpy(np.ascontiguousarray(padded[..., ::-1].transpose(2, 0, 1))).to(self.device)
            x = x.float()[None] / 255
            shape = tuple(x.shape[2:])
            if self.extractor is not None:
                x = {**self.extractor(x), "image": x}
        t1 = time.perf_counter()
        with self.precision.autocast():
            outputs = to_float(self.model(self.precision.prepare(x)))  # NMS and scaling in fp32
        t2 = time.perf_counter()
        if self.classes is not None:
            outputs = {**outputs, self.anchor.key: self.anchor.keep_classes(outputs[self.anchor.key], self.classes)}
        det = postprocess(outputs, self.conf_thres, self.iou_thres, nc=getattr(self.model, "nc", None),
                          agnostic=self.agnostic, max_det=self.max_det, tasks=self.tasks)[0]
        t3 = time.perf_counter()
        self.times["preprocess"] += t1 - t0
        self.times["inference"] += t2 - t1
        self.times["nms"] += t3 - t2
        self.seen += 1

        shape0 = image.shape[:2]
        result: dict[str, Any] = {"im_file": None, "frame": None, "shape": tuple(shape0), "input_shape": shape}
        for task in self.tasks:
            result.update(task.original_fields(det, shape, shape0, ratio_pad))
        result["inference_ms"] = (t2 - t1) * 1000
        return result

    def _cached_maps(self, im_file: str | Path | None) -> tuple[dict[str, torch.Tensor], tuple, tuple]:
        entry = self.cache.entries.get(str(Path(im_file).resolve())) if im_file is not None else None
        if entry is None:
            raise KeyError(f"{im_file}: not in the feature cache {self.cache.root}")
        maps = {k: v[None].to(self.device).float() for k, v in self.cache.load(entry).items()}
        return maps, (self.cache.imgsz, self.cache.imgsz), entry.ratio_pad

    def speed_line(self) -> str:
        t = {k: v * 1000 / max(self.seen, 1) for k, v in self.times.items()}
        return (f"Speed: {t['preprocess']:.1f}ms pre-process, {t['inference']:.1f}ms inference, {t['nms']:.1f}ms NMS "
                f"per image at shape (1, 3, {self.imgsz}, {self.imgsz})")


def _skeleton_of(model: nn.Module) -> list[tuple[int, int]] | None:
    """Keypoint pairs to join, if the model's config names a ``skeleton`` (0-based keypoint indices)."""
    pairs = getattr(model, "skeleton", None) or (getattr(model, "yaml", None) or {}).get("skeleton")
    try:
        return [(int(a), int(b)) for a, b in pairs] if pairs else None
    except (TypeError, ValueError):
        return None


# ----------------------------------------------------------------------------------------------- drawing

def draw(image: np.ndarray, result: dict[str, Any], names: dict[int, str] | Sequence[str] | None = None,
         line_thickness: int | None = None, hide_labels: bool = False, hide_conf: bool = False,
         skeleton: Sequence[Sequence[int]] | None = None, kpt_threshold: float = 0.5,
         mask_alpha: float = 0.5) -> np.ndarray:
    """A copy of ``image`` (BGR, the original the result refers to) with the result drawn on it.

    Every registered task draws its fields, lowest ``draw_layer`` first: masks as translucent class-coloured
    fills, boxes with class-coloured labels, keypoints as dots (those with a visibility probability <=
    ``kpt_threshold`` left out) joined by ``skeleton`` pairs, image-level class probabilities in the top-left
    corner. Text is cv2's built-in Hershey font: no font file is loaded.
    """
    im = image.copy()
    names = dict(enumerate(names)) if isinstance(names, (list, tuple)) else dict(names or {})
    h0, w0 = im.shape[:2]
    style = {"names": names, "lw": line_thickness or max(round((h0 + w0) / 2 * 0.003), 2), "hide_labels": hide_labels,
             "hide_conf": hide_conf, "skeleton": skeleton, "kpt_threshold": kpt_threshold, "mask_alpha": mask_alpha}
    for cls in sorted(TASKS, key=lambda c: c.draw_layer):
        cls.draw(im, result, style)
    return im


# ------------------------------------------------------------------------------------------ label files

def label_lines(result: dict[str, Any], save_conf: bool = False) -> list[str]:
    """YOLO txt lines of a result, normalised by the original image size, in this package's label forms.

    ``cls cx cy w h``, then each task's values in ``label_order``: with keypoints ``kx ky v`` per keypoint
    (``v`` 2 = visible, 0 = not), with masks the largest outer contour of each mask as a polygon, giving the
    multi-task line (see ``data.labels``); a task whose values alone make a line (the polygon of a
    segmentation-only model) replaces the box. An instance whose mask is empty keeps its box. ``save_conf``
    appends the confidence (the line is then a prediction record, no longer a training label).
    """
    h0, w0 = result["shape"]
    scale = np.array([w0, h0], dtype=np.float64)
    boxes = np.asarray(rows(result["boxes"]), dtype=np.float64).reshape(-1, 4)
    order = sorted((cls for cls in TASKS if not cls.anchor), key=lambda c: c.label_order)
    lines = []
    for j, (c, conf) in enumerate(zip(rows(result[CLASS_FIELD]), rows(result["conf"]))):
        x1, y1, x2, y2 = boxes[j]
        values = [(x1 + x2) / 2 / w0, (y1 + y2) / 2 / h0, (x2 - x1) / w0, (y2 - y1) / h0]
        parts = [(cls, v) for cls in order if (v := cls.label_values(result, j, scale)) is not None]
        if len(parts) == 1 and parts[0][0].label_alone_replaces_box:
            values = parts[0][1]
        else:
            values += [x for _, v in parts for x in v]
        if save_conf:
            values = values + [float(conf)]
        lines.append(" ".join([str(int(c))] + [f"{v:.6g}" for v in values]))
    return lines


# -------------------------------------------------------------------------------------------------- runs

def iter_detect(weights: str | Path | nn.Module, source: str | Path, imgsz: int = 640, conf_thres: float = 0.25,
                iou_thres: float = 0.45, max_det: int = 1000, device: str = "", classes: Sequence[int] | None = None,
                agnostic_nms: bool = False, save: bool = False, save_txt: bool = False, save_conf: bool = False,
                project: str | Path = "runs/detect", name: str = "exp", exist_ok: bool = False,
                line_thickness: int | None = 3, hide_labels: bool = False, hide_conf: bool = False,
                verbose: bool = False, features: str | Path = "", extractor: str = "",
                extractor_weights: str = "", amp: str = "auto") -> Iterator[dict[str, Any]]:
    """:func:`detect` one image (or video frame) at a time, for sources too long to hold every result.

    With ``features`` (a cache), a FeatureInput model reads each image's cached maps; without ``source`` it runs
    on every image of the cache. The images are still read, to draw on."""
    if features and not source:
        from ..data.feature_cache import FeatureCache

        files = [Path(f) for f in FeatureCache(features).entries]
    else:
        files = list_sources(source)  # before loading the model: a bad source fails fast
    detector = Detector(weights, imgsz, conf_thres, iou_thres, max_det, device, classes, agnostic_nms, features,
                        extractor, extractor_weights, amp)
    names = detector.names
    save_dir = increment_path(Path(project) / name, exist_ok) if save or save_txt else None
    if save_txt:
        (save_dir / "labels").mkdir(exist_ok=True)
    writers: dict[Path, tuple[cv2.VideoWriter, Path]] = {}
    skipped = []
    try:
        for index, path, frame, count, image, cap in _frames(files):
            if image is None:
                skipped.append(path)
                print(f"WARNING: skipping {path}: not a readable image or video", file=sys.stderr)
                continue
            try:
                result = detector(image, im_file=path)
            except KeyError as e:  # an image the feature cache does not hold
                skipped.append(path)
                print(f"WARNING: skipping {e.args[0]}", file=sys.stderr)
                continue
            result["im_file"], result["frame"] = str(path), frame
            result["save_path"] = result["txt_path"] = None
            if save_dir is not None:
                stem = path.stem if frame is None else f"{path.stem}_{frame}"
                if save:
                    drawn = draw(image, result, names, line_thickness, hide_labels, hide_conf, detector.skeleton)
                    if frame is None:
                        result["save_path"] = str(save_dir / path.name)
                        cv2.imwrite(result["save_path"], drawn)
                    else:
                        writer, out = _video_writer(writers, save_dir, path, cap, drawn)
                        writer.write(drawn)
                        result["save_path"] = str(out)
                if save_txt and len(result[CLASS_FIELD]):
                    result["txt_path"] = str(save_dir / "labels" / f"{stem}.txt")
                    Path(result["txt_path"]).write_text("\n".join(label_lines(result, save_conf)) + "\n")
            if verbose:
                where = f"image {index}/{len(files)}" if frame is None else \
                    f"video {index}/{len(files)} (frame {frame}/{count})"
                print(f"{where} {path}: {result['input_shape'][0]}x{result['input_shape'][1]} "
                      f"{summary(result, names) or '(no detections),'} {result['inference_ms']:.1f}ms")
            yield result
    finally:
        for writer, _ in writers.values():
            writer.release()
    if verbose:
        print(detector.speed_line())
        print(f"Precision: {detector.precision.describe()}")
        if skipped:
            print(f"{len(skipped)} unreadable file{'s' * (len(skipped) > 1)} skipped")
        if save_dir is not None:
            print(f"Results saved to {save_dir}")
            if save_txt:
                n = len(list((save_dir / "labels").glob("*.txt")))
                print(f"{n} label{'s' * (n != 1)} saved to {save_dir / 'labels'}")


def detect(weights: str | Path | nn.Module, source: str | Path, imgsz: int = 640, conf_thres: float = 0.25,
           iou_thres: float = 0.45, max_det: int = 1000, device: str = "", classes: Sequence[int] | None = None,
           agnostic_nms: bool = False, save: bool = False, save_txt: bool = False, save_conf: bool = False,
           project: str | Path = "runs/detect", name: str = "exp", exist_ok: bool = False,
           line_thickness: int | None = 3, hide_labels: bool = False, hide_conf: bool = False,
           verbose: bool = False, features: str | Path = "", extractor: str = "",
           extractor_weights: str = "", amp: str = "auto") -> list[dict[str, Any]]:
    """Run ``weights`` (a checkpoint path or a loaded model) on every image / video frame of ``source``.

    Returns one result dict per image or frame (see the module docstring), in original-image pixels.
    Nothing is written unless ``save`` (annotated images / videos) or ``save_txt`` (YOLO label files) is set,
    into ``project/name`` (incremented: exp, exp2, ...). Unreadable files are skipped with a warning.
    Every result (masks included) is kept in memory: for long videos iterate :func:`iter_detect` instead.
    ``amp``: ``auto`` (bf16 autocast on CPUs with native bf16, fp16 on CUDA) or ``off`` (fp32; see .precision).
    """
    return list(iter_detect(weights, source, imgsz, conf_thres, iou_thres, max_det, device, classes, agnostic_nms,
                            save, save_txt, save_conf, project, name, exist_ok, line_thickness, hide_labels,
                            hide_conf, verbose, features, extractor, extractor_weights, amp))


def summary(result: dict[str, Any], names: dict[int, str]) -> str:
    """Stock's per-image count: ``2 circles, 1 star,`` (classes in index order)."""
    counts = torch.bincount(torch.as_tensor(result[CLASS_FIELD]).long()) if len(result[CLASS_FIELD]) else torch.zeros(0)
    return " ".join(f"{n} {names.get(c, str(c))}{'s' * (n > 1)}," for c, n in enumerate(counts.tolist()) if n)


def _video_writer(writers: dict, save_dir: Path, path: Path, cap: Any, frame: np.ndarray
                  ) -> tuple[cv2.VideoWriter, Path]:
    """The annotated copy of video ``path`` (``<stem>.mp4``, the source's frame rate), opened on first use."""
    if path not in writers:
        fps = cap.get(cv2.CAP_PROP_FPS) if cap is not None else 0
        out = save_dir / f"{path.stem}.mp4"
        h, w = frame.shape[:2]
        writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), fps if fps and fps > 0 else 30, (w, h))
        if not writer.isOpened():
            raise SetupError(f"cannot write video {out}: this OpenCV build has no mp4v encoder")
        writers[path] = (writer, out)
    return writers[path]
