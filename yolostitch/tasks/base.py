"""The task interface: everything one kind of head means outside the model, in one class.

A task (detection, instance masks, keypoints, image classes, or a plugin's) owns which label fields it needs,
its loss terms and default gains, how its raw output is decoded and carried through the one shared NMS, its
metric and the keys it writes to ``metrics.json``, how it draws on an image, and its named export outputs.
The trainer, validator, predictor, plotter and exporter loop over a model's tasks (:func:`tasks_of`) and
name none. A task instance is bound to one head of one model; class-level hooks (``flat_metrics``, ``draw``,
...) work on results alone, for every registered task.

Per-anchor tasks predict one row per anchor, in the order the anchor task (detection) uses: its target
assignment serves them in the loss (:class:`SharedTargets`) and its NMS keeps or drops their rows together
(:meth:`Task.nms_columns`, :meth:`Task.attach`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import ConfigError, FlagError
from ..heads.outputs import AnchorRows
from .registry import TASKS

CLASS_FIELD = "cls"  # each instance's class index: a label field of batches and a field of results


@dataclass
class SharedTargets:
    """What the anchor task's target assignment gives every task's loss for one batch."""

    targets: Tensor  # (n, 6) image, class, cx, cy, w, h (normalised), on the loss device
    assignments: Sequence[Any]  # per level, the anchor task's LevelAssignment
    device: torch.device
    hyp: dict[str, Any]
    images: int  # images in the batch (the loss is stock's mean x images)


@dataclass
class ImageTruth:
    """One image of a validation batch, as the metrics need it (labels in network-input pixels)."""

    batch: dict[str, Any]
    index: int  # the image's position in the batch
    keep: Tensor  # (instances in the batch,) bool: this image's labels
    size: tuple[int, int]  # (h, w) of the network input
    shape0: tuple[int, int]  # (h0, w0) of the original image
    ratio_pad: Any
    true_cls: Tensor  # (n,)
    true_boxes: Tensor  # (n, 4) xyxy in network-input pixels


class Meter:
    """A task's metric over a validation run; per image (after NMS) and per batch (raw outputs)."""

    def add_image(self, det: Any, truth: ImageTruth) -> None:
        """Score one image's kept detections (:class:`~yolostitch.engine.predict.Detections`)."""

    def add_batch(self, output: Any, batch: dict[str, Any]) -> None:
        """Score the task's raw eval output for a whole batch (image-level tasks)."""

    def results(self) -> dict[str, Any] | None:
        """What ``evaluate`` returns under the task's ``result_key``; None when nothing was scored."""
        return None


class Task:
    """Base of every task; subclasses set ``name`` and override the hooks they need (defaults: do nothing)."""

    name: ClassVar[str] = ""  # the head's ``task`` attribute and the key of its output
    anchor: ClassVar[bool] = False  # detection: its target assignment and NMS are shared by per-anchor tasks
    terms: ClassVar[tuple[str, ...]] = ()  # loss terms, in the order they are logged (results.csv columns)
    default_gains: ClassVar[dict[str, float]] = {}  # gains of those terms when the hyp file does not set them
    level_scaled_gains: ClassVar[bool] = True  # gains tuned for 3 levels: rescaled by 3 / levels, as stock's
    required_hyp: ClassVar[tuple[str, ...]] = ()  # hyperparameters a hyp file must set for this task
    sparse_loss: ClassVar[bool] = False  # its terms skip batches without its labels (DDP: unused parameters)
    result_key: ClassVar[str | None] = None  # its key in ``evaluate``'s results (box, mask, pose, ...)
    in_table: ClassVar[bool] = False  # its results have P, R, mAP50, mAP50-95 (a block of the val table)
    output_names: ClassVar[tuple[str, ...]] = ()  # names of its exported tensors; empty: (name,)
    draw_layer: ClassVar[int] = 50  # drawing order: lower first (masks under boxes under keypoints)
    # train.py --evolve: hyp key -> (mutation gain 0-1, lowest, highest) of this task's loss hyperparameters
    evolve_ranges: ClassVar[dict[str, tuple[float, float, float]]] = {}

    def __init__(self, head: nn.Module | None = None, key: str | None = None, model: nn.Module | None = None):
        self.head = head
        self.key = key or self.name  # the output key: name, or name@layer for a second head of a kind
        self.model = model

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.key!r})"

    # --- data ----------------------------------------------------------------------------------------

    def check_data(self, data: Any, cfg: str) -> None:
        """Refuse data this task cannot train on (raise FlagError naming ``cfg`` and the data file)."""

    def check_weights(self, data: Any, weights: str) -> None:
        """Refuse validating ``weights`` on data whose labels do not fit this task's head."""

    def dataset_options(self, data: Any, train: bool = False) -> dict[str, Any]:
        """Keyword arguments for the datasets: which label fields to prepare (``use_masks``, ``kpt_shape``...),
        and with ``train`` how augmentation treats them (``flip_idx``)."""
        return {}

    instance_fields: ClassVar[dict[str, int]] = {}  # extra per-instance label columns: {field: width}

    @classmethod
    def instance_labels(cls, name: str, labels: Any) -> np.ndarray:
        """(instances, width) values of field ``name`` for one image's labels
        (:class:`~yolostitch.data.labels.ImageLabels`, instances in label-file order). They ride with each
        instance through augmentation and reach the loss and metrics as ``batch[name]``. Runs in the loader's
        worker processes: read the task's own label files here (the image's are ``labels.im_file``)."""
        return np.zeros((len(labels), cls.instance_fields[name]), np.float32)

    # --- loss ----------------------------------------------------------------------------------------

    def gains(self, hyp: dict[str, Any], nl: int, imgsz: int) -> dict[str, float]:
        """Each term's gain: the hyp file's value, else the default; rescaled for ``nl`` levels."""
        scale = 3 / nl if self.level_scaled_gains else 1.0
        return {term: float(hyp.get(term, default)) * scale for term, default in self.default_gains.items()}

    def configure(self, data_options: dict[str, Any]) -> None:
        """Read this task's options from the data file's mapping (e.g. ``kpt_sigmas``); the rest is not ours."""

    def shared_targets(self, output: Any, batch: dict[str, Any], hyp: dict[str, Any]) -> SharedTargets:
        """Anchor task only: the target assignment every per-anchor task shares."""
        raise ConfigError(f"task {self.name!r} is not an anchor task: it assigns no targets")

    def loss_terms(self, output: Any, batch: dict[str, Any], shared: SharedTargets) -> dict[str, Tensor]:
        """Raw (un-gained) loss terms, named as in ``terms``, from the task's training output."""
        return {}

    # --- inference -----------------------------------------------------------------------------------

    def nms_rows(self, output: Any) -> Tensor:
        """Anchor task only: decoded rows (bs, N, 5 + nc) xywh, objectness, class probabilities."""
        raise ConfigError(f"task {self.name!r} is not an anchor task: it has no boxes to suppress")

    def nms_columns(self, output: Any) -> Tensor | None:
        """Per-anchor tasks: (bs, N, c) columns that ride along with the anchor's detection row through NMS."""
        return None

    def attach(self, det: Any, columns: Tensor | None, output: Any, image: int) -> None:
        """Store, on one image's kept detections, this task's part: its kept ``columns`` (per-anchor tasks) or
        its output for image ``image`` (image-level tasks), under field names of its own."""

    def original_fields(self, det: Any, size: Sequence[int], shape0: Sequence[int], ratio_pad: Any
                        ) -> dict[str, Tensor]:
        """Result fields in original-image pixels (CPU) from one image's detections on a ``size`` input."""
        return {}

    def batch_fields(self, det: Any, keep: Tensor, size: Sequence[int]) -> dict[str, Tensor]:
        """Per-instance fields of kept detections in the loader's label form (normalised), for drawing."""
        return {}

    def unaugment(self, output: Any, scale: float, flip_width: int | None) -> Any:
        """Test-time augmentation (:mod:`yolostitch.engine.tta`): this task's eval output for the input scaled by
        ``scale`` (and mirrored left-right when ``flip_width``, the unscaled input's width, is given) mapped back
        to the unscaled input: per-anchor tasks their decoded rows (bs, N, c), image-level tasks their output.
        A task that cannot map its output back refuses (the default)."""
        raise FlagError(f"--augment: the {self.key!r} branch's outputs cannot be mapped back from a scaled, mirrored "
                        "image; run this model without --augment")

    # --- metrics -------------------------------------------------------------------------------------

    def meter(self, names: dict[int, str]) -> Meter | None:
        """A fresh accumulator of this task's metric, or None if it has none."""
        return None

    @classmethod
    def flat_metrics(cls, results: dict[str, Any]) -> dict[str, float]:
        """``metrics.json`` / ``results.csv`` figures from ``evaluate``'s results (empty if absent)."""
        key = cls.result_key
        if not cls.in_table or key not in results:
            return {}
        r = results[key]
        return {f"{key}_precision": r["precision"], f"{key}_recall": r["recall"], f"{key}_map50": r["map50"],
                f"{key}_map": r["map"]}

    @classmethod
    def coco_metrics(cls, results: dict[str, Any]) -> dict[str, float]:
        """The COCO-method mAPs ``metrics.json`` adds for the task."""
        key = cls.result_key
        if not cls.in_table or key not in results:
            return {}
        return {f"{key}_map50_coco": results[key]["coco_map50"], f"{key}_map_coco": results[key]["coco_map"]}

    @classmethod
    def report_lines(cls, results: dict[str, Any]) -> list[str]:
        """Lines val.py prints after the table (tasks whose metric is not P/R/mAP)."""
        return []

    # --- outputs on images, label files, COCO records ------------------------------------------------

    @classmethod
    def draw(cls, image: np.ndarray, result: dict[str, Any], style: dict[str, Any]) -> None:
        """Draw this task's fields of ``result`` (original-image pixels) on ``image`` in place."""

    @classmethod
    def draw_labels(cls, tile: np.ndarray, inst: dict[str, Tensor], style: dict[str, Any]) -> None:
        """Draw this task's per-instance fields of a batch (normalised, loader form) on an image tile in place."""

    label_order: ClassVar[int] = 0  # where its values go on a label line (after the box, lower first)
    label_alone_replaces_box: ClassVar[bool] = False  # its values alone make the line, without the box

    @classmethod
    def label_values(cls, result: dict[str, Any], j: int, scale: np.ndarray) -> list[float] | None:
        """Values this task appends to instance ``j``'s YOLO label line (after the box), or None."""
        return None

    @classmethod
    def coco_records(cls, image_id: Any, kept: dict[str, Any]) -> list[dict] | None:
        """COCO results records of one image if this task makes them (``record_priority`` decides who)."""
        return None

    record_priority: ClassVar[int] = -1  # which task's records win (keypoints > masks > boxes); -1: none

    @classmethod
    def annotate_records(cls, records: list[dict], kept: dict[str, Any], maker: type) -> None:
        """Add this task's fields to records another task (``maker``) made."""

    # --- export --------------------------------------------------------------------------------------

    def export_names(self) -> list[str]:
        suffix = self.key[len(self.name):].replace("@", "_")
        return [f"{n}{suffix}" for n in (self.output_names or (self.name,))]

    def export_tensors(self, output: Any) -> list[Tensor]:
        """The task's eval output as the tensors named by :meth:`export_names`: a tensor as it is, a per-anchor
        head's decoded rows (:class:`~yolostitch.heads.outputs.AnchorRows`), any other tuple's tensors."""
        if isinstance(output, Tensor):
            return [output]
        return [output.rows] if isinstance(output, AnchorRows) else list(output)

    @property
    def per_anchor(self) -> bool:
        """Whether the task predicts one row per anchor (the anchor task, and tasks riding through its NMS)."""
        return self.anchor or type(self).nms_columns is not Task.nms_columns

    def eval_output(self, tensors: list[Tensor]) -> Any:
        """The inverse of :meth:`export_tensors`: an exported graph's tensors as this task's eval output."""
        if self.per_anchor and len(tensors) == 1:
            return AnchorRows(tensors[0], [])
        return tensors[0] if len(tensors) == 1 else tuple(tensors)

    def export_metadata(self) -> dict[str, Any]:
        """What a runtime needs to read this task's outputs (added to the exported file's metadata)."""
        return {}

    @classmethod
    def metadata_defaults(cls) -> dict[str, Any]:
        """Metadata keys every export carries, whether or not the model has this task."""
        return {}


def tasks_of(model: nn.Module, every_head: bool = False) -> list[Task]:
    """The model's tasks, one per head, in registry order (detection first): the first head of each kind, or
    with ``every_head`` also the second ones (``kpt@27``: exported, not trained or validated)."""
    from . import detection  # noqa: F401  (the package registers the built-in tasks first)

    heads = getattr(model, "heads", {}) or {}
    order = {name: i for i, name in enumerate(TASKS.names())}
    found = []
    for key, index in heads.items():
        name = key.partition("@")[0]
        if "@" in key and not every_head:
            continue
        found.append((order.get(name, len(order)), index, TASKS.get(name)(head_module(model, key), key, model)))
    return [task for _, _, task in sorted(found, key=lambda f: (f[0], f[1]))]


def tasks_for_outputs(outputs: dict[str, Any]) -> list[Task]:
    """Tasks for a bare outputs dict (no model at hand): one per registered task name among its keys."""
    from . import detection  # noqa: F401

    return [cls(None, cls.name) for cls in TASKS if cls.name in outputs]


def anchor_of(tasks: Sequence[Task], what: str = "this") -> Task:
    """The anchor task (detection) among ``tasks``; ConfigError naming ``what`` needs it otherwise."""
    for task in tasks:
        if task.anchor:
            return task
    raise ConfigError(f"{what} needs a model with a detection head (its target assignment and NMS are shared by "
                      f"every per-anchor branch); this one has {[t.key for t in tasks] or 'none'}")


def head_module(model: nn.Module, key: str) -> nn.Module:
    """The head module producing output ``key``: the one place that looks a head up in the layer list."""
    return model.model[model.heads[key]]


def required_hyp() -> tuple[str, ...]:
    """Every registered task's required hyperparameters, in order, once each."""
    from . import detection  # noqa: F401

    return tuple(dict.fromkeys(h for cls in TASKS for h in cls.required_hyp))


def task_hyp_keys() -> tuple[str, ...]:
    """Every hyperparameter a registered task reads: its required ones and its loss gains."""
    from . import detection  # noqa: F401

    return tuple(dict.fromkeys(h for cls in TASKS for h in (*cls.required_hyp, *cls.default_gains)))
