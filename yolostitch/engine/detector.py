"""Inference on files: ``detect.py`` / ``yolostitch detect``.

Each image of the sources (see :mod:`.sources`: local files only) is letterboxed to a stride multiple (stock
``detect.py``'s rectangular ``auto`` letterbox, ``ops.letterbox``), run through the model, and its detections mapped
back to the original image: boxes, masks (at the original resolution) and keypoints. Drawing a result is
:mod:`.annotate`, its label lines :mod:`.label_files`, annotated videos :mod:`.video`.

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

import sys
from pathlib import Path
from typing import Any, Iterator, Sequence

import cv2
import numpy as np
import torch
from torch import nn

from ..errors import FlagError
from ..export.runtime import is_exported, load_exported
from ..export.sessions import refuse_dnn
from ..ops.letterbox import letterbox
from ..tasks import CLASS_FIELD, tasks_of
from .annotate import draw
from .crops import save_crops
from .inputs import stride_shape
from .label_files import label_lines
from .precision import precision_for, to_float
from .predict import postprocess
from .runs import increment_path, select_device, synced_clock
from .sources import iter_frames, list_sources
from .tta import augmented_forward, check_augment, refuse_feature_model
from .visualize import FeatureRecorder
from .video import VideoWriters


class Detector:
    """A loaded model plus inference settings; ``detector(image_bgr)`` -> one result dict (no files written)."""

    def __init__(self, weights: str | Path | nn.Module, imgsz: int | Sequence[int] = 640,
                 conf_thres: float = 0.25, iou_thres: float = 0.45, max_det: int = 1000,
                 device: str | torch.device = "", classes: Sequence[int] | None = None, agnostic_nms: bool = False,
                 features: str | Path = "", extractor: str = "", extractor_weights: str = "", amp: str = "auto",
                 augment: bool = False, dnn: bool = False):
        if augment:
            check_augment(weights)
        self.augment = augment
        self.device = device if isinstance(device, torch.device) else select_device(device)
        self.precision = precision_for(amp, self.device)  # --amp: the forward's autocast (see .precision)
        if isinstance(weights, nn.Module):
            refuse_dnn("the model", dnn)
            self.model = weights.to(self.device).eval()
        elif is_exported(weights):  # .onnx / .torchscript from export.py: see yolostitch/export/runtime.py
            self.model, self.precision = load_exported(weights, self.device, self.precision, dnn)
        else:
            refuse_dnn(weights, dnn)
            from ..models.fuse import fuse_conv_bn
            from ..weights import load_model

            self.model = load_model(weights, device=self.device)
            fuse_conv_bn(self.model)  # as stock detect.py (a model passed in is left as it is)
        if augment:
            refuse_feature_model(self.model, weights if not isinstance(weights, nn.Module) else "the model")
        self.tasks = tasks_of(self.model)
        self.anchor = next((t for t in self.tasks if t.anchor), None)
        if self.anchor is None:
            raise FlagError(f"detect needs a model with a detection head; this one has "
                            f"{sorted(getattr(self.model, 'heads', {})) or 'none'}")
        self.names: dict[int, str] = dict(getattr(self.model, "names", {}) or {})
        self.stride = max(int(torch.as_tensor(self.model.stride).max()), 1)
        self.shape = stride_shape(imgsz, self.stride)  # (h, w) the letterbox fits each image into
        self.imgsz = max(self.shape)
        self.conf_thres, self.iou_thres, self.max_det = conf_thres, iou_thres, max_det
        self.classes = None if classes is None else [int(c) for c in classes]
        self.agnostic = agnostic_nms
        self.skeleton = _skeleton_of(self.model)
        from .features import feature_source

        # a FeatureInput model reads cached maps (``features``), runs the user's ``extractor`` or the built-in
        # extractor it was trained with
        self.cache, self.extractor = feature_source(self.model, features, self.imgsz, self.device, extractor,
                                                    extractor_weights)
        if (self.cache is not None or self.extractor is not None) and self.shape[0] != self.shape[1]:
            raise FlagError(f"--imgsz {self.shape[0]} {self.shape[1]}: a FeatureInput model takes square sizes "
                            f"(its extractor and feature caches are made at one --imgsz)")
        if self.cache is not None:
            self.imgsz = self.cache.imgsz  # the maps were made at the cache's size
            self.shape = (self.imgsz, self.imgsz)
        self.times = {"preprocess": 0.0, "inference": 0.0, "nms": 0.0}
        self.seen = 0

    @torch.no_grad()
    def __call__(self, image: np.ndarray, im_file: str | Path | None = None) -> dict[str, Any]:
        """Detections on one BGR image; a model reading a feature cache takes the maps cached for ``im_file``."""
        t0 = synced_clock(self.device)
        if self.cache is not None:
            x, shape, ratio_pad = self._cached_maps(im_file)
        else:
            padded, plan = letterbox(image, self.shape, self.stride, auto=True)
            ratio_pad = plan.ratio_pad
            x = torch.from_numpy(np.ascontiguousarray(padded[..., ::-1].transpose(2, 0, 1))).to(self.device)
            x = x.float()[None] / 255
            shape = tuple(x.shape[2:])
            if self.extractor is not None:
                x = {**self.extractor(x), "image": x}
        t1 = synced_clock(self.device)
        with self.precision.autocast():  # NMS and scaling in fp32
            if self.augment:
                outputs = to_float(augmented_forward(self.model, self.precision.prepare(x), self.tasks, self.stride))
            else:
                outputs = to_float(self.model(self.precision.prepare(x)))
        t2 = synced_clock(self.device)
        if self.classes is not None:
            outputs = {**outputs, self.anchor.key: self.anchor.keep_classes(outputs[self.anchor.key], self.classes)}
        det = postprocess(outputs, self.conf_thres, self.iou_thres, nc=getattr(self.model, "nc", None),
                          agnostic=self.agnostic, max_det=self.max_det, tasks=self.tasks)[0]
        t3 = synced_clock(self.device)
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
        return maps, self.shape, entry.ratio_pad

    def speed_line(self) -> str:
        t = {k: v * 1000 / max(self.seen, 1) for k, v in self.times.items()}
        return (f"Speed: {t['preprocess']:.1f}ms pre-process, {t['inference']:.1f}ms inference, {t['nms']:.1f}ms NMS "
                f"per image at shape (1, 3, {self.shape[0]}, {self.shape[1]})")


def _skeleton_of(model: nn.Module) -> list[tuple[int, int]] | None:
    """Keypoint pairs to join, if the model's config names a ``skeleton`` (0-based keypoint indices)."""
    pairs = getattr(model, "skeleton", None) or (getattr(model, "yaml", None) or {}).get("skeleton")
    try:
        return [(int(a), int(b)) for a, b in pairs] if pairs else None
    except (TypeError, ValueError):
        return None


# -------------------------------------------------------------------------------------------------- runs

def iter_detect(weights: str | Path | nn.Module, source: str | Path, imgsz: int | Sequence[int] = 640,
                conf_thres: float = 0.25, iou_thres: float = 0.45, max_det: int = 1000, device: str = "",
                classes: Sequence[int] | None = None, agnostic_nms: bool = False, save: bool = False,
                save_txt: bool = False, save_conf: bool = False, project: str | Path = "runs/detect", name: str = "exp",
                exist_ok: bool = False, line_thickness: int | None = 3, hide_labels: bool = False,
                hide_conf: bool = False, verbose: bool = False, features: str | Path = "", extractor: str = "",
                extractor_weights: str = "", amp: str = "auto", save_crop: bool = False,
                augment: bool = False, vid_stride: int = 1, visualize: bool = False,
                view_img: bool = False, dnn: bool = False) -> Iterator[dict[str, Any]]:
    """:func:`detect` one image (or video frame) at a time, for sources too long to hold every result.

    With ``features`` (a cache), a FeatureInput model reads each image's cached maps; without ``source`` it runs
    on every image of the cache. The images are still read, to draw on. ``dnn``: an .onnx file runs in OpenCV
    DNN instead of onnxruntime (stock's ``--dnn``)."""
    if vid_stride < 1:
        raise FlagError(f"--vid-stride {vid_stride}: must be 1 or more (1 = every frame)")
    if view_img:
        check_display()
    if features and not source:
        from ..data.feature_cache import FeatureCache

        files = [Path(f) for f in FeatureCache(features).entries]
    else:
        files = list_sources(source)  # before loading the model: a bad source fails fast
    detector = Detector(weights, imgsz, conf_thres, iou_thres, max_det, device, classes, agnostic_nms, features,
                        extractor, extractor_weights, amp, augment, dnn)
    names = detector.names
    recorder = FeatureRecorder(detector.model) if visualize else None
    save_dir = (increment_path(Path(project) / name, exist_ok) if save or save_txt or save_crop or visualize
                else None)
    if save_txt:
        (save_dir / "labels").mkdir(exist_ok=True)
    skipped = []
    with VideoWriters(save_dir) as videos:
        for index, path, frame, count, image, cap in iter_frames(files, vid_stride):
            if image is None:
                skipped.append(path)
                print(f"WARNING: skipping {path}: not a readable image or video", file=sys.stderr)
                continue
            if recorder is not None:
                recorder.maps.clear()
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
                        result["save_path"] = str(videos.write(path, cap, drawn))
                if save_crop:
                    save_crops(image, result, names, save_dir / "crops", stem, CLASS_FIELD)
                if recorder is not None:
                    recorder.save(save_dir / stem)
                if save_txt and len(result[CLASS_FIELD]):
                    result["txt_path"] = str(save_dir / "labels" / f"{stem}.txt")
                    Path(result["txt_path"]).write_text("\n".join(label_lines(result, save_conf)) + "\n")
            if view_img:  # stock's --view-img: each drawn result in a window, 1 ms per image
                cv2.imshow(str(path), draw(image, result, names, line_thickness, hide_labels, hide_conf,
                                           detector.skeleton))
                cv2.waitKey(1)
            if verbose:
                where = f"image {index}/{len(files)}" if frame is None else \
                    f"video {index}/{len(files)} (frame {frame}/{count})"
                print(f"{where} {path}: {result['input_shape'][0]}x{result['input_shape'][1]} "
                      f"{summary(result, names) or '(no detections),'} {result['inference_ms']:.1f}ms")
            yield result
    if recorder is not None:
        recorder.close()
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


def detect(weights: str | Path | nn.Module, source: str | Path, imgsz: int | Sequence[int] = 640,
           **options: Any) -> list[dict[str, Any]]:
    """Run ``weights`` (a checkpoint path or a loaded model) on every image / video frame of ``source``;
    ``options`` are :func:`iter_detect`'s (``conf_thres``, ``iou_thres``, ``device``, ``save``, ...).

    ``imgsz``: one size, or (height, width) to fit each image into (stock's two-value ``--imgsz``).
    Returns one result dict per image or frame (see the module docstring), in original-image pixels.
    Nothing is written unless ``save`` (annotated images / videos), ``save_txt`` (YOLO label files) or
    ``save_crop`` (each detection cut out, see :mod:`.crops`) is set,
    into ``project/name`` (incremented: exp, exp2, ...). Unreadable files are skipped with a warning.
    Every result (masks included) is kept in memory: for long videos iterate :func:`iter_detect` instead.
    ``amp``: ``auto`` (bf16 autocast on CPUs with native bf16, fp16 on CUDA) or ``off`` (fp32; see .precision).
    ``augment``: test-time augmentation (three scaled and mirrored passes, see :mod:`.tta`), as stock's.
    ``vid_stride``: every that many-th video frame only (saved videos play at the source rate over fewer frames).
    ``visualize``: each layer's feature maps per image, as pictures in ``<run>/<stem>/`` (see :mod:`.visualize`).
    """
    return list(iter_detect(weights, source, imgsz, **options))


def check_display() -> None:
    """Refuse --view-img where no window can open: OpenCV aborts the whole process there instead of raising."""
    import os

    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise FlagError("--view-img opens a window, and this machine has no display (DISPLAY is not set): "
                        "use --save (the default) and look at the saved images instead")


def summary(result: dict[str, Any], names: dict[int, str]) -> str:
    """Stock's per-image count: ``2 circles, 1 star,`` (classes in index order)."""
    counts = torch.bincount(torch.as_tensor(result[CLASS_FIELD]).long()) if len(result[CLASS_FIELD]) else torch.zeros(0)
    return " ".join(f"{n} {names.get(c, str(c))}{'s' * (n > 1)}," for c, n in enumerate(counts.tolist()) if n)
