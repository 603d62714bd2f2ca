"""A per-box colour classifier, added to yolostitch from outside the package (``--plugin colour_task.py``).

Per anchor, one of :data:`COLOURS` for the object in the box, predicted beside the detection and carried through
its NMS, so every detected box also says what colour the object is. Its labels are one integer per instance
in ``colours/<image stem>.txt`` beside ``labels/`` (see ``make_colour_labels.py``); a missing file or a value of
-1 leaves instances unlabelled (no loss, not scored). Only yolostitch's public interface is used: a head
registered with ``register_module`` and a task registered with ``register_task``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor

from yolostitch.heads import PerAnchorHead
from yolostitch.heads.per_anchor import anchors_per_level
from yolostitch.models import Row, Shape, register_module
from yolostitch.tasks import ImageTruth, Meter, SharedTargets, Task, register_task

LOGGER = logging.getLogger("yolostitch")
COLOURS = ("red", "yellow", "green", "cyan", "blue", "magenta", "grey")
MATCH_IOU = 0.5  # a label is found when a kept box of its class overlaps it this much


def colour_file(im_file: str) -> Path:
    """``.../images/x.jpg`` -> ``.../colours/x.txt`` (the last ``images`` folder, as label files are found)."""
    parts = list(Path(im_file).parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "colours"
            break
    return Path(*parts).with_suffix(".txt")


@register_module()
class BoxColour(PerAnchorHead):
    """Per anchor, colour logits (training) / probabilities (inference)::

        [[17, 20, 23], 1, BoxColour, [anchors]]  # same inputs and anchors as Detect
    """

    task = "colour"

    def __init__(self, na: int, n_colours: int, channels: Sequence[int], strides: Sequence[int]):
        super().__init__(n_colours, na, channels, strides)
        self.n_colours = n_colours

    @classmethod
    def from_row(cls, row: Row) -> tuple[BoxColour, Shape | None]:
        if not row.args:
            raise row.error("BoxColour needs [anchors]")
        na = anchors_per_level(row, row.args[0])
        return cls(na, len(COLOURS), [s.channels for s in row.inputs], [s.stride for s in row.inputs]), None

    def decode(self, level: int, p: torch.Tensor) -> torch.Tensor:
        return p.softmax(-1)


class ColourMeter(Meter):
    """Of the labelled instances: found (a kept box of the right class, IoU >= 0.5) with the right colour."""

    def __init__(self):
        self.labelled = self.found = self.right = 0

    def add_image(self, det: Any, truth: ImageTruth) -> None:
        colours = truth.batch["colour"][truth.keep].view(-1).long()
        labelled = colours >= 0
        self.labelled += int(labelled.sum())
        if not len(det) or not labelled.any():
            return
        iou = torchvision.ops.box_iou(truth.true_boxes, det.boxes.cpu())
        iou[truth.true_cls[:, None] != det.cls.cpu()[None]] = 0
        best, index = iou.max(1)
        found = labelled & (best >= MATCH_IOU)
        predicted = det.colour_probs.cpu().argmax(-1)[index]
        self.found += int(found.sum())
        self.right += int((found & (predicted == colours)).sum())

    def results(self) -> dict[str, Any] | None:
        if not self.labelled:
            return None
        return {"accuracy": self.right / self.labelled, "found_accuracy": self.right / max(self.found, 1)}


@register_task
class BoxColourTask(Task):
    name = "colour"
    terms = ("colour",)
    default_gains = {"colour": 0.05}  # the hyp file may set `colour:`
    evolve_ranges = {"colour": (1, 0.005, 0.5)}  # train.py --evolve mutates `colour:` in this range when the hyp sets it
    sparse_loss = True
    result_key = "colour"
    draw_layer = 25  # over the boxes
    instance_fields = {"colour": 1}

    @classmethod
    def instance_labels(cls, name: str, labels: Any) -> np.ndarray:
        path = colour_file(labels.im_file)
        values = np.full((len(labels), 1), -1.0, np.float32)
        if path.is_file():
            given = [float(v) for v in path.read_text().split()]
            if len(given) == len(labels):
                values[:, 0] = given
            else:
                LOGGER.warning("%s: %d colours for %d instances; its instances count as unlabelled", path,
                               len(given), len(labels))
        return values

    def loss_terms(self, output: Any, batch: dict[str, Any], shared: SharedTargets) -> dict[str, Tensor]:
        """Cross-entropy on the anchors the detection assigned to labelled instances, a mean per level, summed."""
        target = batch["colour"].to(shared.device).view(-1).long()
        loss = sum(p.sum() * 0.0 for p in output)  # keeps the graph when no instance is labelled
        for p, a in zip(output, shared.assignments):
            t = target[a.instance]
            use = t >= 0
            if use.any():
                logits = p[a.batch[use], a.anchor[use], a.gj[use], a.gi[use]]
                loss = loss + F.cross_entropy(logits, t[use])
        return {"colour": loss}

    def nms_columns(self, output: Any) -> Tensor:
        return output.rows

    def unaugment(self, output: Any, scale: float, flip_width: int | None) -> Tensor:
        return output[0]  # a box's colour does not change when the image is scaled or mirrored (--augment)

    def attach(self, det: Any, columns: Tensor | None, output: Any, image: int) -> None:
        det.fields["colour_probs"] = columns

    def original_fields(self, det: Any, size: Sequence[int], shape0: Sequence[int], ratio_pad: Any
                        ) -> dict[str, Tensor]:
        probs = det.colour_probs.float().cpu()
        conf, colour = probs.max(-1) if len(probs) else (torch.zeros(0), torch.zeros(0, dtype=torch.long))
        return {"colour": colour, "colour_conf": conf}

    def meter(self, names: dict[int, str]) -> Meter:
        return ColourMeter()

    @classmethod
    def flat_metrics(cls, results: dict[str, Any]) -> dict[str, float]:
        if cls.result_key not in results:
            return {}
        r = results[cls.result_key]
        return {"colour_accuracy": r["accuracy"], "colour_found_accuracy": r["found_accuracy"]}

    @classmethod
    def report_lines(cls, results: dict[str, Any]) -> list[str]:
        if cls.result_key not in results:
            return []
        r = results[cls.result_key]
        return [f"box colours: {r['accuracy']:.3f} of labelled instances found with the right colour, "
                f"{r['found_accuracy']:.3f} right among those found"]

    @classmethod
    def draw(cls, image: np.ndarray, result: dict[str, Any], style: dict[str, Any]) -> None:
        if "colour" not in result or style["hide_labels"]:
            return
        scale = style["lw"] / 3
        for box, colour in zip(result["boxes"].tolist(), result["colour"].tolist()):
            corner = (int(box[0]) + 2, max(int(box[3]) - 4, 10))
            cv2.putText(image, COLOURS[colour], corner, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255),
                        max(style["lw"] - 1, 1), cv2.LINE_AA)
